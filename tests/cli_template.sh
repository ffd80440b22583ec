#!/usr/bin/env bash
# tests/cli_template.sh ORCHARD SHARED SOURCE - `orchard template` renders every case of
# ../shared/reference/templates byte-identically (and fails on the error cases), plus
# the model-template path and usage errors.
set -u
bin=$1 shared=$2
python3 - "$bin" "$shared" <<'PY'
import json, os, subprocess, sys, tempfile
bin, shared = sys.argv[1], sys.argv[2]
ref_dir = os.path.join(shared, "reference", "templates")
ok = bad = 0
for name in sorted(os.listdir(ref_dir)):
    ref = json.load(open(os.path.join(ref_dir, name)))
    tpl = os.path.join(shared, "templates", ref["template"])
    for case, c in ref["cases"].items():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(c["context"], f)
        p = subprocess.run([bin, "template", "--template", tpl, "--context", f.name,
                            "--bos", ref["bos_token"], "--eos", ref["eos_token"], "--now", ref["now"]],
                           capture_output=True)
        os.unlink(f.name)
        if "error" in c:
            good = p.returncode == 1
        else:
            good = p.returncode == 0 and p.stdout == c["output"].encode()
        if good:
            ok += 1
        else:
            bad += 1
            print(f"FAIL {name} {case}: rc {p.returncode} {p.stderr[:200]!r}")
# the model path: stories260K has no template, so the ChatML fallback renders
ctx = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
json.dump({"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True}, ctx)
ctx.close()
p = subprocess.run([bin, "template", "-m", os.path.join(shared, "models", "stories260K.gguf"), "--context", ctx.name], capture_output=True)
if p.returncode == 0 and b"<|im_start|>user\nHi<|im_end|>" in p.stdout: ok += 1
else: bad += 1; print("FAIL model fallback", p.returncode, p.stdout[:200])
p = subprocess.run([bin, "template", "--bogus"], capture_output=True)
if p.returncode == 2: ok += 1
else: bad += 1; print("FAIL usage error exit", p.returncode)
os.unlink(ctx.name)
print(f"template: {ok} passed, {bad} failed")
sys.exit(1 if bad else 0)
PY
