#!/usr/bin/env python3
"""Writes lua/aws/services/<name>.lua (one entry per service, loaded on first use through the
index lua/aws/services.lua) and lua/aws/params/<name>.lua from botocore's API models (the
official AWS service models).

    python3 lua/aws/genservices.py BOTOCORE_DATA_DIR --split lua/aws/services
    python3 lua/aws/genservices.py BOTOCORE_DATA_DIR --params lua/aws/params

json services keep only their metadata, operation names and paginators (the json protocol
needs no shapes). rest-json, rest-xml and query services keep, for the operations listed in
REST_OPS, the HTTP bindings and the shapes reachable from them (to place members in the URI,
query, headers or body and to read XML answers with their types)."""
import glob, gzip, json, os, sys

SERVICES = ["dms", "emr", "glue", "secretsmanager", "athena", "mwaa", "s3", "sts"]
REST_OPS = {
    "s3": ["GetObject", "PutObject", "HeadObject", "ListObjectsV2", "DeleteObject", "CreateBucket",
           "DeleteBucket", "HeadBucket", "ListBuckets"],
    "sts": ["GetCallerIdentity", "AssumeRole", "AssumeRoleWithWebIdentity", "GetSessionToken"],
    "mwaa": None,  # all
}


def data_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    import botocore
    return os.path.join(os.path.dirname(botocore.__file__), "data")


def load(d, svc, name):
    files = sorted(glob.glob(os.path.join(d, svc, "*", name + ".json*")))
    if not files:
        return {}
    f = files[-1]
    return json.load(gzip.open(f) if f.endswith(".gz") else open(f))


def lua_str(s):
    return json.dumps(s, ensure_ascii=False)


def lua(v, ind=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_str(v)
    if isinstance(v, list):
        return "{" + ", ".join(lua(x, ind) for x in v) + "}"
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = []
        for k in sorted(v):
            key = k if k.isidentifier() and k not in ("end", "and", "or", "not", "function") else "[" + lua_str(k) + "]"
            items.append(ind + "  " + key + " = " + lua(v[k], ind + "  "))
        return "{\n" + ",\n".join(items) + "\n" + ind + "}"
    raise TypeError(v)


def shape_info(model, name):
    s = model["shapes"][name]
    t = s["type"]
    out = {"type": t}
    if t == "structure":
        mem = {}
        for m, spec in s.get("members", {}).items():
            e = {"shape": spec["shape"]}
            for k_in, k_out in (("location", "location"), ("locationName", "location_name"),
                                ("flattened", "flattened"), ("xmlNamespace", None),
                                ("streaming", "streaming")):
                if k_in in spec and k_out:
                    e[k_out] = spec[k_in]
            mem[m] = e
        out["members"] = mem
        if s.get("payload"):
            out["payload"] = s["payload"]
        if s.get("required"):
            out["required"] = s["required"]
        if s.get("locationName"):
            out["location_name"] = s["locationName"]
    elif t == "list":
        out["member"] = s["member"]["shape"]
        if s["member"].get("locationName"):
            out["member_name"] = s["member"]["locationName"]
        if s.get("flattened"):
            out["flattened"] = True
    elif t == "map":
        out["key"] = s["key"]["shape"]
        out["value"] = s["value"]["shape"]
        if s.get("flattened"):
            out["flattened"] = True
    if s.get("timestampFormat"):
        out["timestamp_format"] = s["timestampFormat"]
    if s.get("streaming"):
        out["streaming"] = True
    return out


def reachable(model, roots):
    seen, todo = {}, list(roots)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        info = shape_info(model, n)
        seen[n] = info
        if info["type"] == "structure":
            todo += [m["shape"] for m in info["members"].values()]
        elif info["type"] == "list":
            todo.append(info["member"])
        elif info["type"] == "map":
            todo += [info["key"], info["value"]]
    return seen


def write_params(d, outdir):
    """lua/aws/params/<service>.lua: per operation, the top-level input members with their
    kinds and the required ones, for checking a call's parameters before sending it."""
    os.makedirs(outdir, exist_ok=True)
    for svc in SERVICES:
        model = load(d, svc, "service-2")
        ops = {}
        for n, op in model["operations"].items():
            if svc in REST_OPS and REST_OPS[svc] and n not in REST_OPS[svc]:
                continue
            members, required = {}, []
            if op.get("input"):
                shape = model["shapes"][op["input"]["shape"]]
                for m, spec in shape.get("members", {}).items():
                    members[m] = model["shapes"][spec["shape"]]["type"]
                required = shape.get("required", [])
            ops[n] = {"members": members, "required": required}
        with open(os.path.join(outdir, svc + ".lua"), "w") as f:
            f.write("-- aws/params/%s.lua — GENERATED by lua/aws/genservices.py from botocore's model:\n" % svc)
            f.write("-- each operation's top-level parameters (name -> kind) and the required ones.\n")
            f.write("return " + lua(ops) + "\n")


def main():
    d = data_dir()
    if len(sys.argv) > 2 and sys.argv[2] == "--params":
        write_params(d, sys.argv[3])
        return
    out = {}
    for svc in SERVICES:
        model = load(d, svc, "service-2")
        pag = load(d, svc, "paginators-1").get("pagination", {})
        md = model["metadata"]
        e = {
            "protocol": md["protocol"],
            "api_version": md["apiVersion"],
            "endpoint_prefix": md["endpointPrefix"],
            "signing_name": md.get("signingName", md["endpointPrefix"]),
            "service_id": md["serviceId"],
        }
        if md.get("jsonVersion"):
            e["json_version"] = md["jsonVersion"]
        if md.get("targetPrefix"):
            e["target_prefix"] = md["targetPrefix"]
        if md.get("globalEndpoint"):
            e["global_endpoint"] = md["globalEndpoint"]
        if md.get("xmlNamespace"):
            e["xml_namespace"] = md["xmlNamespace"]
        ops = {}
        if svc in REST_OPS:
            names = REST_OPS[svc] or sorted(model["operations"])
            roots = []
            for n in names:
                op = model["operations"][n]
                o = {"method": op["http"]["method"], "uri": op["http"]["requestUri"]}
                if op.get("input"):
                    o["input"] = op["input"]["shape"]
                    roots.append(o["input"])
                    if op["input"].get("locationName"):
                        o["input_name"] = op["input"]["locationName"]
                if op.get("output"):
                    o["output"] = op["output"]["shape"]
                    roots.append(o["output"])
                    if op["output"].get("resultWrapper"):
                        o["result_wrapper"] = op["output"]["resultWrapper"]
                if op.get("endpoint", {}).get("hostPrefix"):
                    o["host_prefix"] = op["endpoint"]["hostPrefix"]
                if op.get("authtype") == "none" or op.get("auth") == ["smithy.api#noAuth"]:
                    o["unsigned"] = True
                ops[n] = o
            e["shapes"] = reachable(model, roots)
        else:
            for n in model["operations"]:
                ops[n] = True
        e["operations"] = ops
        pg = {}
        for n, p in pag.items():
            if n not in ops:
                continue
            if not isinstance(p.get("input_token"), str) or not isinstance(p.get("output_token"), str):
                continue  # multi-token paginators are not supported
            q = {"input_token": p["input_token"], "output_token": p["output_token"]}
            if isinstance(p.get("result_key"), str):
                q["result_key"] = p["result_key"]
            elif isinstance(p.get("result_key"), list):
                q["result_key"] = p["result_key"][0]
            if p.get("limit_key"):
                q["limit_key"] = p["limit_key"]
            if p.get("more_results"):
                q["more_results"] = p["more_results"]
            pg[n] = q
        e["paginators"] = pg
        out[svc] = e
    if len(sys.argv) > 2 and sys.argv[2] == "--split":
        # one file per service (lua/aws/services/<name>.lua), loaded on first use
        outdir = sys.argv[3]
        os.makedirs(outdir, exist_ok=True)
        for name, e in out.items():
            with open(os.path.join(outdir, name + ".lua"), "w") as f:
                f.write("-- aws/services/%s.lua — GENERATED by lua/aws/genservices.py from botocore's API model.\n" % name)
                f.write("return " + lua(e) + "\n")
        return
    print("-- aws/services.lua — GENERATED by lua/aws/genservices.py from botocore's API models;")
    print("-- edit the generator (or add an entry by hand: a json service needs only its metadata")
    print("-- and operation names). One entry per service, keyed by boto3's service name.")
    print("return " + lua(out))


main()
