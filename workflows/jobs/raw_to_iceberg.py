"""raw_to_iceberg — the Spark job of flowrun's dms_to_emr pipeline.

Applies the batch of raw files that the pipeline planned (DMS full-load files LOAD*.parquet and
CDC files named by time, with DMS's Op column) to Apache Iceberg tables in the Glue Data Catalog
(catalog "glue_catalog"), one table at a time:

  action "load"   the table's contents are replaced, in one snapshot, by the load files' rows and
                  the CDC files' changes after them (a full reload drops rows deleted at the
                  source; time travel to the previous load still works); the table is created on
                  its first load;
  action "merge"  the CDC files' inserts, updates and deletes are MERGEd into the table, the
                  latest change of each key winning (file order, then row order within a file:
                  DMS writes changes in commit order);
  action "none"   nothing to do.

Every commit carries the batch's end ("until", the name of the last CDC file it covers) as the
snapshot summary property flowrun.raw-bookmark, committed atomically with the data. The pipeline
reads that bookmark from the table's metadata to plan the next batch, so a run that fails leaves
it where it was, and the next run picks the same files up again. Before a merge the job checks
that the table's bookmark is the batch's start ("since"): a batch already committed (a retried
step) is skipped; any other bookmark means another run moved it, and the job fails.

    spark-submit raw_to_iceberg.py --raw-uri s3://bucket/raw --database lake \
        --warehouse s3://bucket/warehouse --config s3://bucket/.../job-config.json \
        --run-id RUN --table public.orders:id --table public.order_items:order_id+line_no

--config is the JSON the pipeline writes for each run: {"columns": {"schema.table": [{"name",
"type", "precision", "scale"}]}, "keys": {...}, "bookmark_property": "flowrun.raw-bookmark",
"tables": {"schema.table": {"target", "action", "files", "since", "until"}}}. Without a batch for
a table (an older config), the whole folder RAW_URI/<schema>/<table>/ is loaded.

The Spark session must be configured with the Iceberg extensions and a Glue-backed catalog named
glue_catalog (the pipeline passes those as --conf). The statements are built by the pure
functions below (tests/py/test_pipeline_job.py runs them without Spark); pyspark is imported only
inside the functions that need a session.
"""

import argparse
import json
import sys

CATALOG = "glue_catalog"
BOOKMARK = "flowrun.raw-bookmark"

# PostgreSQL information_schema data_type -> Spark SQL type
PG_TO_SPARK = {
    "smallint": "smallint",
    "integer": "int",
    "bigint": "bigint",
    "real": "float",
    "double precision": "double",
    "boolean": "boolean",
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamp",
    "text": "string",
    "character varying": "string",
    "character": "string",
    "uuid": "string",
    "json": "string",
    "jsonb": "string",
    "bytea": "binary",
    "time without time zone": "string",
    "interval": "string",
}

# The column DMS adds to CDC files: the operation, I (insert), U (update) or D (delete).
DMS_OP = "Op"
# Columns the job adds to order changes: the file's place in the batch, the row's in its file.
FILE_ORDER, ROW_ORDER = "_flowrun_file", "_flowrun_row"


class BookmarkMoved(Exception):
    """The table's bookmark is not where the batch starts: another run moved it."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw-uri", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--config")
    p.add_argument("--run-id", default="")
    p.add_argument("--table", action="append", required=True,
                   help="schema.table:pk1+pk2 (repeatable)")
    return p.parse_args(argv)


def parse_table(spec):
    name, _, keys = spec.partition(":")
    schema, _, table = name.rpartition(".")
    keys = [k for k in keys.split("+") if k]
    if not keys:
        raise SystemExit(f"--table {spec}: a primary key is required (schema.table:pk)")
    return schema or "public", table, keys


def spark_type(col):
    t = col.get("type", "")
    if t == "numeric":
        p, s = col.get("precision"), col.get("scale")
        if p and p <= 38:
            return f"decimal({p},{s or 0})"
        return "decimal(38,10)"
    return PG_TO_SPARK.get(t)


def quote(name):
    return "`" + name.replace("`", "``") + "`"


def sql_string(s):
    return "'" + str(s).replace("\\", "\\\\").replace("'", "\\'") + "'"


def target_name(database, table):
    return f"{CATALOG}.{quote(database)}.{quote(table.lower())}"


def batch_for(config, full, raw_uri):
    """The batch planned for a table; an older config (no batch) loads the whole folder."""
    b = (config.get("tables") or {})
    if isinstance(b, dict) and full in b:
        b = dict(b[full])
        b.setdefault("files", [])
        return b
    schema, _, table = full.rpartition(".")
    return {"action": "load", "files": [f"{raw_uri.rstrip('/')}/{schema}/{table}/"],
            "since": None, "until": None}


def decide(action, current, since, until):
    """What to do with a batch given the table's bookmark: "apply", "skip", or BookmarkMoved.
    A load always applies (it replaces the contents whatever they were); a merge applies when
    the table is where the batch starts, is skipped when the batch is already committed."""
    if action == "none":
        return "skip"
    if action == "load":
        return "apply"
    if action != "merge":
        raise ValueError(f"unknown batch action {action!r}")
    if current == since:
        return "apply"
    if current is not None and current == until:
        return "skip"
    raise BookmarkMoved(f"the table is at bookmark {current!r}, the batch starts at {since!r}: "
                        "another run moved it")


def bookmark_sql(target, prop=BOOKMARK):
    """The newest value of prop among the current snapshot and its ancestors (a rollback of the
    table rolls its bookmark back with it)."""
    p = sql_string(prop)
    return (f"SELECT s.summary[{p}] AS bookmark FROM {target}.snapshots s "
            f"JOIN {target}.history h ON s.snapshot_id = h.snapshot_id "
            f"WHERE h.is_current_ancestor AND s.summary[{p}] IS NOT NULL "
            f"ORDER BY h.made_current_at DESC LIMIT 1")


def file_order_sql(files):
    """A CASE giving each file of the batch its place (by name: the last part of its path)."""
    whens = " ".join(f"WHEN {sql_string(f.rstrip('/').rsplit('/', 1)[-1])} THEN {i}"
                     for i, f in enumerate(files))
    return (f"CASE element_at(split(_metadata.file_path, '/'), -1) {whens} ELSE -1 END"
            if files else "0")


def latest_sql(view, keys, columns):
    """One row per key: the latest change (last file, then last row in it). Deletes are kept
    as markers (Op = 'D') for the merge to apply; order columns are dropped."""
    part = ", ".join(quote(k) for k in keys)
    cols = ", ".join(quote(c) for c in columns if c not in (FILE_ORDER, ROW_ORDER))
    return (f"SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {part} "
            f"ORDER BY {FILE_ORDER} DESC, {ROW_ORDER} DESC) AS _flowrun_rn FROM {view}) "
            f"WHERE _flowrun_rn = 1")


def live_rows_sql(view, columns):
    """The rows a load keeps: the latest change of each key unless it is a delete, without Op."""
    cols = ", ".join(quote(c) for c in columns if c != DMS_OP)
    where = f" WHERE {DMS_OP} IS NULL OR {DMS_OP} <> 'D'" if DMS_OP in columns else ""
    return f"SELECT {cols} FROM {view}{where}"


def merge_sql(target, view, columns, keys):
    """MERGE of the latest change per key: deletes delete, the rest upsert."""
    cols = [c for c in columns if c != DMS_OP]
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
    sets = ", ".join(f"t.{quote(c)} = s.{quote(c)}" for c in cols)
    names = ", ".join(quote(c) for c in cols)
    values = ", ".join(f"s.{quote(c)}" for c in cols)
    has_op = DMS_OP in columns
    delete = f"WHEN MATCHED AND s.{DMS_OP} = 'D' THEN DELETE " if has_op else ""
    insert_cond = f"AND (s.{DMS_OP} IS NULL OR s.{DMS_OP} <> 'D') " if has_op else ""
    return (f"MERGE INTO {target} t USING {view} s ON {on} "
            f"{delete}"
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED {insert_cond}THEN INSERT ({names}) VALUES ({values})")


def merge(spark, df, target, keys):
    """Registers df and runs the MERGE (kept for callers of the job's first version)."""
    src = "flowrun_src"
    df.createOrReplaceTempView(src)
    spark.sql(merge_sql(target, src, df.columns, keys))


def commit_properties(batch, run_id, prop=BOOKMARK):
    """The snapshot summary properties a batch's commit carries."""
    props = {prop: batch.get("until") or "", "flowrun.action": batch.get("action", "load")}
    if run_id:
        props["flowrun.run-id"] = run_id
    return props


def with_commit_properties(spark, props, fn):
    """Runs fn (SQL that commits) with props in the snapshot summary of its commit, through
    Iceberg's CommitMetadata (a Java Callable implemented in Python over the py4j callback
    server; in PySpark's pinned-thread mode the callback's SQL runs on the JVM thread whose
    thread-local holds the properties)."""
    from pyspark.java_gateway import ensure_callback_server_started

    gw = spark.sparkContext._gateway
    ensure_callback_server_started(gw)
    jvm = spark.sparkContext._jvm

    class Action:
        def call(self):
            fn()
            return 0

        class Java:
            implements = ["java.util.concurrent.Callable"]

    jprops = jvm.java.util.HashMap()
    for k, v in props.items():
        jprops.put(k, v)
    jvm.org.apache.iceberg.spark.CommitMetadata.withCommitProperties(
        jprops, Action(), jvm.java.lang.Class.forName("java.lang.RuntimeException"))


def load_config(spark, uri):
    if not uri:
        return {}
    text = spark.read.text(uri, wholetext=True).first()[0]
    return json.loads(text)


def typed(df, columns):
    """Cast each column to its source type (DMS writes some as strings: numeric, dates)."""
    from pyspark.sql import functions as F

    types = {c["name"]: spark_type(c) for c in columns or []}
    out = []
    for name in df.columns:
        t = types.get(name)
        out.append(F.col(quote(name)).cast(t).alias(name) if t else F.col(quote(name)))
    return df.select(*out)


def table_exists(spark, target):
    try:
        spark.table(target).schema
        return True
    except Exception:  # AnalysisException: not found
        return False


def current_bookmark(spark, target, prop):
    if not table_exists(spark, target):
        return None
    rows = spark.sql(bookmark_sql(target, prop)).collect()
    return rows[0]["bookmark"] if rows else None


def read_batch(spark, files):
    """The batch's rows with their order columns: file place, row place within the file."""
    from pyspark.sql import functions as F

    # load files have no Op column (unless IncludeOpForFullLoad): merge the files' schemas
    raw = spark.read.option("mergeSchema", "true").parquet(*files)
    return raw.select("*", F.expr(file_order_sql(files)).alias(FILE_ORDER),
                      F.col("_metadata.row_index").alias(ROW_ORDER))


def apply_table(spark, args, config, spec):
    from pyspark.sql import functions as F

    schema, table, keys = parse_table(spec)
    full = f"{schema}.{table}"
    target = target_name(args.database, table)
    prop = config.get("bookmark_property") or BOOKMARK
    batch = batch_for(config, full, args.raw_uri)
    current = current_bookmark(spark, target, prop)
    if decide(batch["action"], current, batch.get("since"), batch.get("until")) == "skip":
        print(f"{full}: nothing to apply (bookmark {current!r})", file=sys.stderr)
        return
    files = batch["files"]
    if not files:
        if batch["action"] == "merge":
            return
        raise SystemExit(f"{full}: a load with no files")
    df = typed(read_batch(spark, files), config.get("columns", {}).get(full))
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise SystemExit(f"{full}: primary key column(s) {missing} not in the raw files")
    df.createOrReplaceTempView("flowrun_batch")
    latest = spark.sql(latest_sql("flowrun_batch", keys, df.columns))
    latest = latest.withColumn("_ingested_at", F.current_timestamp())
    if args.run_id:
        latest = latest.withColumn("_flowrun_run_id", F.lit(args.run_id))
    props = commit_properties(batch, args.run_id, prop)
    if batch["action"] == "load":
        latest.createOrReplaceTempView("flowrun_latest")
        rows = spark.sql(live_rows_sql("flowrun_latest", latest.columns))
        if not table_exists(spark, target):
            rows.limit(0).writeTo(target).using("iceberg") \
                .tableProperty("format-version", "2") \
                .tableProperty("write.merge.mode", "merge-on-read") \
                .tableProperty("flowrun.source", full) \
                .tableProperty("flowrun.primary_key", ",".join(keys)) \
                .create()
        # one snapshot replacing every row, the bookmark in its summary
        w = rows.writeTo(target)
        for k, v in props.items():
            w = w.option("snapshot-property." + k, v)
        w.overwrite(F.lit(True))
        print(f"loaded {full} into {target} ({len(files)} file(s))", file=sys.stderr)
    else:
        latest.createOrReplaceTempView("flowrun_src")
        sql = merge_sql(target, "flowrun_src", latest.columns, keys)
        with_commit_properties(spark, props, lambda: spark.sql(sql))
        print(f"merged {len(files)} CDC file(s) of {full} into {target}", file=sys.stderr)
    after = current_bookmark(spark, target, prop)
    if after != props[prop]:
        raise SystemExit(f"{full}: committed, but the bookmark reads {after!r}, not "
                         f"{props[prop]!r}: the next run will apply this batch again")


def run(args):
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("flowrun raw_to_iceberg").getOrCreate()
    config = load_config(spark, args.config)
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {CATALOG}.{quote(args.database)}")
    for spec in args.table:
        apply_table(spark, args, config, spec)
    spark.stop()


if __name__ == "__main__":
    run(parse_args(sys.argv[1:]))
