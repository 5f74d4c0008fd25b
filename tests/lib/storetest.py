"""Helpers for process tests of the PostgreSQL run store: a database of the test's own on the
suite's server (tests/servers/pg.sh), psql to look inside it, the store's URL."""
import json
import os
import subprocess

import tap

PG = os.environ.get("FLOWRUN_TEST_PG")
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")


def require_pg():
    if not PG:
        tap.ok(False, "FLOWRUN_TEST_PG not set: scripts/test.sh starts PostgreSQL (tests/servers/pg.sh)")
        tap.done()


def parts():
    return dict(p.split("=", 1) for p in PG.split())


class Db:
    """A fresh database flowrun_t_<name>; .url is the store's postgresql:// URL (with the
    password: pass it only where a test checks it is never printed)."""

    def __init__(self, name):
        self.p = parts()
        self.name = "flowrun_t_" + name
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name, db=self.p["dbname"])
        self.psql("CREATE DATABASE %s" % self.name, db=self.p["dbname"])
        self.url = "postgresql://%s:%s@%s:%s/%s" % (self.p["user"], self.p["password"], self.p["host"],
                                                    self.p["port"], self.name)
        self.display = "postgresql://%s@%s:%s/%s" % (self.p["user"], self.p["host"], self.p["port"],
                                                     self.name)
        self.password = self.p["password"]

    def psql(self, sql, db=None):
        env = dict(os.environ, PGPASSWORD=self.p["password"])
        r = subprocess.run([os.path.join(PGBIN, "psql"), "-qAtX", "-h", self.p["host"], "-p",
                            self.p["port"], "-U", self.p["user"], "-d", db or self.name, "-c", sql],
                           env=env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("psql: " + r.stderr)
        return r.stdout.strip()

    def rows(self, sql):
        return json.loads(self.psql("SELECT coalesce(json_agg(x), '[]') FROM (%s) x" % sql))

    def value(self, sql):
        return self.psql(sql)

    def drop(self):
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name, db=self.p["dbname"])
