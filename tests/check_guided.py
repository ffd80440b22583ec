#!/usr/bin/python3
"""check_guided.py OUTPUTS.jsonl CASES_DIR - the independent checker of guided generation.

Reads the outputs test_guided_valid wrote (one JSON object a line: kind schema/regex/gbnf,
the case, the model, seed, output text and stop reason) and checks every one:
  - schema: the output parses as JSON (strictly: no NaN/Infinity) and validates with the
    jsonschema package (Draft 2020-12) with format checking; formats jsonschema checks
    only with optional packages (date-time, time, hostname; uri needs rfc3987) get strict
    RFC 3339 / RFC 1123 checks written here;
  - regex: Python re full match (ASCII classes, as the grammar's \\d \\w \\s);
  - gbnf: a parser or pattern of the grammar's language, per grammar name;
  - stop: "eos" or "grammar", never the token limit.
It also checks that the schemas in CASES_DIR/cases.json use every keyword and format
issue 7 lists, and that every case has outputs. Run with Debian's python3
(python3-jsonschema, python3-rfc3987). Exits 1 on any failure."""
import datetime
import json
import re
import sys

try:
    import jsonschema
except ImportError:
    print("check_guided: the jsonschema package is missing (apt install python3-jsonschema; "
          "scripts/install-deps)")
    sys.exit(2)

# the Draft 2020-12 checkers (a bare FormatChecker() would mix in draft 3's "time")
FC = jsonschema.Draft202012Validator.FORMAT_CHECKER

RFC3339_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$")


def check_time(s):
    m = RFC3339_TIME.match(s)
    if not m:
        return False
    h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if h > 23 or mi > 59 or sec > 60:
        return False
    if m.group(6) is not None and (int(m.group(6)) > 23 or int(m.group(7)) > 59):
        return False
    return True


def check_date(s):
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return False
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return True


def check_hostname(s):
    if len(s) > 253 or not s:
        return False
    return all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", lab)
               for lab in s.split("."))


if "date-time" not in FC.checkers:
    @FC.checks("date-time")
    def _dt(s):
        if not isinstance(s, str):
            return True
        parts = re.split("[Tt]", s)
        return len(parts) == 2 and check_date(parts[0]) and check_time(parts[1])
if "time" not in FC.checkers:
    @FC.checks("time")
    def _t(s):
        return not isinstance(s, str) or check_time(s)
if "hostname" not in FC.checkers:
    @FC.checks("hostname")
    def _h(s):
        return not isinstance(s, str) or check_hostname(s)
if "uri" not in FC.checkers:
    @FC.checks("uri")
    def _u(s):
        return not isinstance(s, str) or re.fullmatch(
            r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\"<>\\^`{|}]*", s) is not None
for f in ("date", "email", "ipv4", "ipv6", "uuid"):
    assert f in FC.checkers, "jsonschema lacks the %s format checker" % f


def strict_json(text):
    def bad_const(c):
        raise ValueError("non-standard constant " + c)
    return json.loads(text, parse_constant=bad_const)


# ---- GBNF languages ----

def arith_ok(s):
    """root ::= expr; expr ::= term (("+"|"-") term){0,3}; term ::= factor
    (("*"|"/") factor){0,2}; factor ::= number | "(" expr ")" nested at most twice, the
    innermost level being number (op number){0,3}."""
    pos = 0

    def number():
        nonlocal pos
        m = re.match(r"[0-9]{1,3}", s[pos:])
        if not m:
            return False
        pos += m.end()
        return True

    def innermost():
        nonlocal pos
        if not number():
            return False
        for _ in range(3):
            if pos < len(s) and s[pos] in "+-*/":
                pos += 1
                if not number():
                    return False
        return True

    def factor(level):
        nonlocal pos
        if pos < len(s) and s[pos] == "(":
            pos += 1
            ok = expr(level + 1) if level < 1 else innermost()
            if not ok or pos >= len(s) or s[pos] != ")":
                return False
            pos += 1
            return True
        return number()

    def term(level):
        nonlocal pos
        if not factor(level):
            return False
        for _ in range(2):
            if pos < len(s) and s[pos] in "*/":
                pos += 1
                if not factor(level):
                    return False
        return True

    def expr(level):
        nonlocal pos
        if not term(level):
            return False
        for _ in range(3):
            if pos < len(s) and s[pos] in "+-":
                pos += 1
                if not term(level):
                    return False
        return True

    return expr(0) and pos == len(s)


def json_object_ok(s):
    try:
        v = strict_json(s)
    except ValueError:
        return False
    return isinstance(v, dict) and s.lstrip() == s


def parens_ok(s, depth=3):
    # root ::= p3; pK ::= "(" p(K-1){0,2} ")"; p0 ::= "()"
    def p(i, k):
        if k == 0:
            return i + 2 if s.startswith("()", i) else -1
        if i >= len(s) or s[i] != "(":
            return -1
        i += 1
        for _ in range(2):
            j = p(i, k - 1)
            if j < 0:
                break
            i = j
        return i + 1 if i < len(s) and s[i] == ")" else -1
    return p(0, depth) == len(s)


GBNF = {
    "arith": arith_ok,
    "json-object": json_object_ok,
    "list": lambda s: re.fullmatch(r"(- [^\n]{1,24}\n){1,4}", s) is not None,
    "csv": lambda s: re.fullmatch(r'(([a-z0-9]{1,6}|"[a-z ]{0,8}")(,([a-z0-9]{1,6}|"[a-z ]{0,8}")){2}\n){1,3}',
                                  s) is not None,
    "parens": parens_ok,
    "unicode": lambda s: re.fullmatch(r"(héllo|wörld|日本|[α-ω]{1,3})!", s) is not None,
}

# ---- keyword coverage of the schema set ----

KEYWORDS = ["type", "properties", "required", "additionalProperties", "items", "prefixItems",
            "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
            "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
            "exclusiveMinimum", "exclusiveMaximum", "minProperties", "maxProperties",
            "patternProperties"]
FORMATS = ["date-time", "date", "time", "email", "uuid", "uri", "ipv4", "ipv6", "hostname"]


def coverage(schemas):
    seen, formats, features = set(), set(), set()

    def walk(s):
        if isinstance(s, dict):
            for k, v in s.items():
                if k in ("enum", "const"):
                    seen.add(k)
                    continue
                seen.add(k)
                if k == "format":
                    formats.add(v)
                if k == "type" and isinstance(v, list):
                    features.add("type array")
                    if "null" in v:
                        features.add("nullable")
                if k == "additionalProperties":
                    features.add("additionalProperties " + ("bool" if isinstance(v, bool) else "schema"))
                if k == "$ref" and v == "#":
                    features.add("recursion")
                if k in ("$defs", "definitions") and isinstance(v, dict):
                    for dn, dv in v.items():
                        if '"#/%s/%s"' % (k, dn) in json.dumps(dv):
                            features.add("recursion")
                if k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") and \
                        isinstance(v, float) and v != int(v):
                    features.add("decimal " + k)
                    if s.get("type") == "number" and v < 0:
                        features.add("negative decimal")
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)
    for s in schemas:
        walk(s)
    missing = [k for k in KEYWORDS if k not in seen]
    missing += ["format " + f for f in FORMATS if f not in formats]
    for f in ["type array", "nullable", "additionalProperties bool", "additionalProperties schema",
              "recursion", "decimal minimum", "decimal maximum", "decimal exclusiveMinimum",
              "decimal exclusiveMaximum", "negative decimal"]:
        if f not in features:
            missing.append(f)
    return missing


def main():
    outputs, cases_dir = sys.argv[1], sys.argv[2]
    cases = json.load(open(cases_dir + "/cases.json", encoding="utf-8"))
    fails = []
    missing = coverage([c["schema"] for c in cases["schemas"]])
    if missing:
        fails.append("the schemas do not cover: " + ", ".join(missing))
    if len(cases["schemas"]) < 50:
        fails.append("fewer than 50 schemas")
    validators = {c["name"]: jsonschema.Draft202012Validator(c["schema"], format_checker=FC)
                  for c in cases["schemas"]}
    for c in cases["schemas"]:
        jsonschema.Draft202012Validator.check_schema(c["schema"])
    counts = {}
    n = 0
    for line in open(outputs, encoding="utf-8"):
        d = json.loads(line)
        n += 1
        kind, name, out = d["kind"], d["name"], d["output"]
        counts[(kind, name)] = counts.get((kind, name), 0) + 1
        where = "%s %s (model %s, seed %s)" % (kind, name, d["model"], d["seed"])
        if d["stop"] not in ("eos", "grammar"):
            fails.append("%s: stopped by %s, not by itself: %r" % (where, d["stop"], out[:200]))
            continue
        if kind == "schema":
            try:
                inst = strict_json(out)
            except ValueError as e:
                fails.append("%s: not JSON (%s): %r" % (where, e, out[:300]))
                continue
            errs = list(validators[name].iter_errors(inst))
            if errs:
                fails.append("%s: INVALID: %s: %r" % (where, errs[0].message, out[:300]))
        elif kind == "regex":
            if not re.fullmatch(name, out, re.ASCII):
                fails.append("%s: no full match: %r" % (where, out[:300]))
        elif kind == "gbnf":
            if not GBNF[name](out):
                fails.append("%s: not in the language: %r" % (where, out[:300]))
        else:
            fails.append("unknown kind " + kind)
    for c in cases["schemas"]:
        if counts.get(("schema", c["name"]), 0) == 0:
            fails.append("schema %s: no outputs" % c["name"])
    for r in cases["regexes"]:
        if counts.get(("regex", r), 0) == 0:
            fails.append("regex %s: no outputs" % r)
    for g in cases["grammars"]:
        if counts.get(("gbnf", g["name"]), 0) == 0:
            fails.append("grammar %s: no outputs" % g["name"])
    for f in fails[:50]:
        print("FAIL:", f)
    print("check_guided: %d outputs (%d schemas, %d regexes, %d grammars), %d failures" %
          (n, len(cases["schemas"]), len(cases["regexes"]), len(cases["grammars"]), len(fails)))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
