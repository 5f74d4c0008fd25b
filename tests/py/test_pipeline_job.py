"""workflows/jobs/raw_to_iceberg.py without a Spark cluster: its command line, the source type
mapping, and the MERGE statement it builds (a fake session records the SQL). The module imports
pyspark only inside its functions, so these parts run on any python3."""
import contextlib
import importlib.util
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "raw_to_iceberg", os.path.join(tap.ROOT, "workflows", "jobs", "raw_to_iceberg.py"))
job = importlib.util.module_from_spec(spec)
spec.loader.exec_module(job)


class FakeDF:
    def __init__(self, columns):
        self.columns = columns
        self.view = None

    def createOrReplaceTempView(self, name):
        self.view = name


class FakeSpark:
    def __init__(self):
        self.statements = []

    def sql(self, s):
        self.statements.append(s)


def cli():
    a = job.parse_args(["--raw-uri", "s3://raw/raw", "--database", "lake", "--warehouse", "s3://w",
                        "--table", "public.orders:id", "--table", "public.order_items:order_id+line_no"])
    tap.eq(a.table, ["public.orders:id", "public.order_items:order_id+line_no"], "--table repeats")
    tap.eq(job.parse_table("public.order_items:order_id+line_no"),
           ("public", "order_items", ["order_id", "line_no"]), "composite key")
    tap.eq(job.parse_table("orders:id"), ("public", "orders", ["id"]), "schema defaults to public")
    try:
        job.parse_table("public.orders")
        tap.ok(False, "a table without a key is refused")
    except SystemExit as e:
        tap.like(str(e), "primary key is required", "a table without a key is refused")
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            job.parse_args(["--database", "lake"])
        tap.ok(False, "missing --raw-uri refused")
    except SystemExit:
        tap.ok(True, "missing --raw-uri refused")


def types():
    tap.eq(job.spark_type({"type": "numeric", "precision": 12, "scale": 2}), "decimal(12,2)", "numeric(p,s)")
    tap.eq(job.spark_type({"type": "numeric"}), "decimal(38,10)", "unbounded numeric")
    tap.eq(job.spark_type({"type": "timestamp with time zone"}), "timestamp", "timestamptz")
    tap.eq(job.spark_type({"type": "bigint"}), "bigint", "bigint")
    tap.eq(job.spark_type({"type": "jsonb"}), "string", "jsonb as string")
    tap.eq(job.spark_type({"type": "tsvector"}), None, "unknown types keep the Parquet type")
    tap.eq(job.quote("we`ird"), "`we``ird`", "identifiers quoted")


def merge_sql():
    spark = FakeSpark()
    df = FakeDF(["order_id", "line_no", "qty", "_ingested_at"])
    job.merge(spark, df, "glue_catalog.`lake`.`order_items`", ["order_id", "line_no"])
    tap.eq(df.view, "flowrun_src", "source registered as a view")
    sql = spark.statements[0]
    tap.like(sql, "MERGE INTO glue_catalog.`lake`.`order_items` t USING flowrun_src s", "MERGE INTO target")
    tap.like(sql, "ON t.`order_id` = s.`order_id` AND t.`line_no` = s.`line_no`", "joined on the whole key")
    tap.like(sql, "WHEN MATCHED THEN UPDATE SET", "updates matches")
    tap.like(sql, "WHEN NOT MATCHED THEN INSERT (`order_id`, `line_no`, `qty`, `_ingested_at`)", "inserts new rows")
    tap.ok("DELETE" not in sql, "no delete clause for full-load files (no Op column)")
    spark = FakeSpark()
    job.merge(spark, FakeDF(["Op", "id", "v"]), "t", ["id"])
    sql = spark.statements[0]
    tap.like(sql, "WHEN MATCHED AND s.Op = 'D' THEN DELETE", "CDC deletes applied")
    tap.like(sql, "INSERT (`id`, `v`)", "the Op column is not stored")


for fn in (cli, types, merge_sql):
    tap.test(fn)
tap.done()
