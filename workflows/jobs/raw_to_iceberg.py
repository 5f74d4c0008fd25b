"""raw_to_iceberg — the Spark step of flowrun's dms_to_emr pipeline.

Reads the raw Parquet that an AWS DMS full load (and, later, CDC files) wrote under
RAW_URI/<schema>/<table>/, gives every column its source type, keeps the latest row per primary
key, adds an ingestion timestamp, and MERGEs the result into an Apache Iceberg table in the Glue
Data Catalog (catalog "glue_catalog"), creating the table on the first run.

    spark-submit raw_to_iceberg.py --raw-uri s3://bucket/raw --database lake \
        --warehouse s3://bucket/warehouse --config s3://bucket/.../job-config.json \
        --run-id RUN --table public.orders:id --table public.order_items:order_id+line_no

--config is JSON written by the pipeline's pre-flight: {"columns": {"schema.table": [{"name",
"type", "precision", "scale"}]}, "keys": {...}}; without it the Parquet types are kept.
The Spark session must be configured with the Iceberg extensions and a Glue-backed catalog
named glue_catalog (the pipeline passes those as --conf).
"""

import argparse
import json
import sys

CATALOG = "glue_catalog"

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

# Columns DMS adds to its files: the operation (I/U/D, CDC files only) and its commit time.
DMS_OP = "Op"
DMS_TS = ("_dms_ingestion_ts", "dms_commit_ts", "transact_id")


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


def latest_per_key(df, keys):
    """One row per primary key: the latest change wins; deletes are kept as markers."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = []
    for c in DMS_TS:
        if c in df.columns:
            order.append(F.col(quote(c)).desc_nulls_last())
    if not order:
        # a full load has one row per key; the file order is the load order
        df = df.withColumn("_flowrun_seq", F.monotonically_increasing_id())
        order.append(F.col("_flowrun_seq").desc())
    w = Window.partitionBy(*[F.col(quote(k)) for k in keys]).orderBy(*order)
    df = df.withColumn("_flowrun_rn", F.row_number().over(w)).where("_flowrun_rn = 1")
    return df.drop("_flowrun_rn", "_flowrun_seq")


def merge(spark, df, target, keys):
    cols = [c for c in df.columns if c != DMS_OP]
    src = "flowrun_src"
    df.createOrReplaceTempView(src)
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
    sets = ", ".join(f"t.{quote(c)} = s.{quote(c)}" for c in cols)
    names = ", ".join(quote(c) for c in cols)
    values = ", ".join(f"s.{quote(c)}" for c in cols)
    has_op = DMS_OP in df.columns
    delete = f"WHEN MATCHED AND s.{DMS_OP} = 'D' THEN DELETE " if has_op else ""
    insert_cond = f"AND (s.{DMS_OP} IS NULL OR s.{DMS_OP} <> 'D') " if has_op else ""
    spark.sql(
        f"MERGE INTO {target} t USING {src} s ON {on} "
        f"{delete}"
        f"WHEN MATCHED THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED {insert_cond}THEN INSERT ({names}) VALUES ({values})"
    )


def table_exists(spark, target):
    try:
        spark.table(target).schema
        return True
    except Exception:  # AnalysisException: not found
        return False


def run(args):
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.builder.appName("flowrun raw_to_iceberg").getOrCreate()
    config = load_config(spark, args.config)
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {CATALOG}.{quote(args.database)}")
    base = args.raw_uri.rstrip("/")
    for spec in args.table:
        schema, table, keys = parse_table(spec)
        full = f"{schema}.{table}"
        target = f"{CATALOG}.{quote(args.database)}.{quote(table.lower())}"
        df = spark.read.parquet(f"{base}/{schema}/{table}/")
        df = typed(df, config.get("columns", {}).get(full))
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise SystemExit(f"{full}: primary key column(s) {missing} not in the raw files")
        df = latest_per_key(df, keys)
        df = df.withColumn("_ingested_at", F.current_timestamp())
        if args.run_id:
            df = df.withColumn("_flowrun_run_id", F.lit(args.run_id))
        if not table_exists(spark, target):
            first = df.where(f"{DMS_OP} IS NULL OR {DMS_OP} <> 'D'") if DMS_OP in df.columns else df
            (first.drop(DMS_OP) if DMS_OP in first.columns else first).writeTo(target) \
                .using("iceberg") \
                .tableProperty("format-version", "2") \
                .tableProperty("write.merge.mode", "merge-on-read") \
                .tableProperty("flowrun.source", full) \
                .tableProperty("flowrun.primary_key", ",".join(keys)) \
                .create()
            print(f"created {target} from {full}", file=sys.stderr)
        else:
            merge(spark, df, target, keys)
            print(f"merged {full} into {target}", file=sys.stderr)
    spark.stop()


if __name__ == "__main__":
    run(parse_args(sys.argv[1:]))
