#!/usr/bin/env bash
# tests/cli_install.sh ORCHARD SHARED SOURCE - `cmake --install` puts the header,
# libraries, orchard.pc and the CMake package config in place, and a program built
# against the installed library with pkg-config loads a model and evaluates it.
set -eu
bin=$1 shared=$2
build=$(dirname "$bin")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake -DCMAKE_INSTALL_PREFIX="$tmp/prefix" -P "$build/cmake_install.cmake" >/dev/null
for f in include/orchard.h lib/liborchard.a lib/liborchard.so lib/pkgconfig/orchard.pc \
         lib/cmake/orchard/orchardConfig.cmake lib/cmake/orchard/orchardTargets.cmake bin/orchard; do
  [ -e "$tmp/prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
cat >"$tmp/app.c" <<'C'
#include <orchard.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (orc_version_number() != ORC_VERSION_NUMBER) return 3;
    orc_model *m;
    if (orc_model_load(argv[1], NULL, &m) != ORC_OK) { fprintf(stderr, "%s\n", orc_last_error()); return 1; }
    orc_context *c;
    orc_token t[2] = {1, 403};
    if (orc_context_new(m, NULL, &c) != ORC_OK || orc_eval(c, t, 2, false) != ORC_OK) return 2;
    printf("%s %d\n", orc_model_arch(m), orc_model_n_vocab(m));
    orc_context_free(c);
    orc_model_free(m);
    return 0;
}
C
# the .pc file carries the configured prefix; point it at the staging prefix
sed "s|^prefix=.*|prefix=$tmp/prefix|; s|^libdir=.*|libdir=$tmp/prefix/lib|; s|^includedir=.*|includedir=$tmp/prefix/include|" \
  "$tmp/prefix/lib/pkgconfig/orchard.pc" >"$tmp/orchard.pc"
flags=$(PKG_CONFIG_PATH="$tmp" pkg-config --cflags --libs orchard)
# a sanitizer build's library needs the sanitizer runtimes in the program too
grep -q '^ORC_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" && flags="$flags -fsanitize=address,undefined"
# shellcheck disable=SC2086
cc -std=c11 -o "$tmp/app" "$tmp/app.c" $flags -Wl,-rpath,"$tmp/prefix/lib"
out=$("$tmp/app" "$shared/models/stories260K.gguf")
[ "$out" = "llama 512" ] || { echo "FAIL: app printed '$out'"; exit 1; }
echo "install: 1 passed, 0 failed"
