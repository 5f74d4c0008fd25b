"""workflows/jobs/raw_to_iceberg.py without a Spark cluster: its command line, the source type
mapping, the batch decisions (apply, skip, BookmarkMoved), the statements it builds (bookmark,
file and row order, latest change per key, the rows a load keeps, MERGE) and the commit of the
bookmark through Iceberg's CommitMetadata (a fake py4j JVM records the calls). The module imports
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


def batches():
    cfg = {"tables": {"public.orders": {"action": "merge", "files": ["s3://r/raw/public/orders/a.parquet"],
                                        "since": "a", "until": "b"}}}
    tap.eq(job.batch_for(cfg, "public.orders", "s3://r/raw")["action"], "merge", "the planned batch")
    old = job.batch_for({"columns": {}}, "public.orders", "s3://r/raw/")
    tap.eq((old["action"], old["files"]), ("load", ["s3://r/raw/public/orders/"]),
           "an older config loads the whole folder")
    tap.eq(job.decide("load", "x", None, "y"), "apply", "a load always applies")
    tap.eq(job.decide("load", None, None, ""), "apply", "a first load applies")
    tap.eq(job.decide("none", "x", "x", "x"), "skip", "nothing to do")
    tap.eq(job.decide("merge", "f1", "f1", "f3"), "apply", "a merge from the table's bookmark applies")
    tap.eq(job.decide("merge", "", "", "f1"), "apply", "from the empty bookmark of a load without CDC")
    tap.eq(job.decide("merge", "f3", "f1", "f3"), "skip", "a batch already committed is skipped")
    for current in ("f2", None, "f4"):
        try:
            job.decide("merge", current, "f1", "f3")
            tap.ok(False, "bookmark %r: refused" % (current,))
        except job.BookmarkMoved as e:
            tap.like(str(e), "another run moved it", "bookmark %r: BookmarkMoved" % (current,))
    props = job.commit_properties({"action": "merge", "until": "20240102-000000000.parquet"}, "run-1")
    tap.eq(props, {"flowrun.raw-bookmark": "20240102-000000000.parquet", "flowrun.action": "merge",
                   "flowrun.run-id": "run-1"}, "the commit's summary properties")
    tap.eq(job.commit_properties({"action": "load", "until": None}, "")["flowrun.raw-bookmark"], "",
           "a load without CDC files commits the empty bookmark")


def statements():
    t = job.target_name("lake", "Orders")
    tap.eq(t, "glue_catalog.`lake`.`orders`", "target in the Glue catalog, lower case")
    sql = job.bookmark_sql(t)
    tap.like(sql, "FROM glue_catalog.`lake`.`orders`.snapshots s JOIN glue_catalog.`lake`.`orders`.history h",
             "reads the snapshots and the history")
    tap.like(sql, "WHERE h.is_current_ancestor AND s.summary['flowrun.raw-bookmark'] IS NOT NULL",
             "among the current snapshot's ancestors")
    tap.like(sql, "ORDER BY h.made_current_at DESC LIMIT 1", "the newest")
    tap.like(job.bookmark_sql(t, "it's"), "summary['it\\'s']", "property quoted")
    order = job.file_order_sql(["s3://r/raw/public/orders/LOAD00000001.parquet",
                                "s3://r/raw/public/orders/20240102-000000000.parquet"])
    tap.eq(order, "CASE element_at(split(_metadata.file_path, '/'), -1) WHEN 'LOAD00000001.parquet' THEN 0 "
                  "WHEN '20240102-000000000.parquet' THEN 1 ELSE -1 END", "each file's place in the batch")
    latest = job.latest_sql("b", ["order_id", "line_no"], ["Op", "order_id", "line_no", "qty",
                                                           "_flowrun_file", "_flowrun_row"])
    tap.like(latest, "PARTITION BY `order_id`, `line_no` ORDER BY _flowrun_file DESC, _flowrun_row DESC",
             "the latest change per key: last file, then last row")
    tap.like(latest, "SELECT `Op`, `order_id`, `line_no`, `qty` FROM", "order columns dropped, Op kept")
    tap.like(latest, "WHERE _flowrun_rn = 1", "one row per key")
    live = job.live_rows_sql("l", ["Op", "id", "v"])
    tap.eq(live, "SELECT `id`, `v` FROM l WHERE Op IS NULL OR Op <> 'D'", "a load keeps what was not deleted")
    tap.eq(job.live_rows_sql("l", ["id", "v"]), "SELECT `id`, `v` FROM l", "load files without Op")


class FakeJVMObject:
    """Records the calls made on the JVM side of py4j."""

    def __init__(self, log, path=""):
        self._log, self._path = log, path

    def __getattr__(self, name):
        return FakeJVMObject(self._log, (self._path + "." + name).lstrip("."))

    def __call__(self, *args):
        self._log.append((self._path, args))
        if self._path == "java.util.HashMap":
            return FakeMap()
        if self._path.endswith("withCommitProperties"):
            args[1].call()   # what Iceberg does: runs the action with the properties set
        return FakeJVMObject(self._log, self._path + "()")


class FakeMap(dict):
    def put(self, k, v):
        self[k] = v


def commit_metadata():
    import types
    log, ran = [], []
    gw_module = types.ModuleType("pyspark.java_gateway")
    gw_module.ensure_callback_server_started = lambda gw: log.append(("callback server", (gw,)))
    pyspark = types.ModuleType("pyspark")
    sys.modules.setdefault("pyspark", pyspark)
    sys.modules["pyspark.java_gateway"] = gw_module

    class SC:
        _gateway = "gateway"
        _jvm = FakeJVMObject(log)

    class Spark:
        sparkContext = SC()

    job.with_commit_properties(Spark(), {"flowrun.raw-bookmark": "f3"}, lambda: ran.append("MERGE"))
    tap.eq(log[0], ("callback server", ("gateway",)), "the py4j callback server is started")
    call = [c for c in log if c[0].endswith("withCommitProperties")]
    tap.eq(len(call), 1, "CommitMetadata.withCommitProperties is called once")
    tap.eq(call[0][0], "org.apache.iceberg.spark.CommitMetadata.withCommitProperties", "Iceberg's class")
    tap.eq(dict(call[0][1][0]), {"flowrun.raw-bookmark": "f3"}, "with the properties")
    tap.eq(ran, ["MERGE"], "and the statement runs inside it")
    tap.eq(call[0][1][1].Java.implements, ["java.util.concurrent.Callable"], "as a java Callable")


for fn in (cli, types, merge_sql, batches, statements, commit_metadata):
    tap.test(fn)
tap.done()
