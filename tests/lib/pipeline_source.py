"""The pipeline tests' view of a source table, as the simulator's DMS (lua/sim/source.lua) and the
moto driver (pipeline_moto.py) see it: {key: digest}, the key the primary key's columns as text
joined with "|", the digest PostgreSQL's hashtext of the row's text in hex. Read with psql."""
import subprocess


def psql(conninfo, sql):
    return subprocess.run(["psql", conninfo, "-At", "-c", sql], check=True,
                          stdout=subprocess.PIPE, text=True).stdout


def parse_lines(text):
    out = {}
    for line in text.splitlines():
        if "\t" in line:
            k, h = line.split("\t", 1)
            out[k] = h
    return out


def read(conninfo, full):
    schema, table = full.split(".")
    rel = '"%s"."%s"' % (schema, table)
    pk = psql(conninfo, "SELECT string_agg(quote_ident(a.attname), ',' ORDER BY array_position("
                        "i.indkey::int2[], a.attnum)) FROM pg_index i JOIN pg_attribute a ON "
                        "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = "
                        "'%s'::regclass AND i.indisprimary" % rel).strip()
    key = "concat_ws('|', %s)" % ", ".join("t.%s::text" % c for c in pk.split(","))
    return parse_lines(psql(conninfo, "SELECT %s || E'\\t' || to_hex(hashtext(t::text)) FROM %s AS t" % (key, rel)))
