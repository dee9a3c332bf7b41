#!/bin/sh
# Checks what `make cpp` needs from the system: a C++17 compiler, CMake, and the codec and JSON headers.
# As root, installs the missing Debian packages with apt-get; otherwise prints the exact command and fails.
set -u
missing=""
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
command -v make >/dev/null 2>&1 || missing="$missing make"
header() {  # $1 header, $2 package that ships it
  for dir in /usr/include /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/local/include; do
    [ -f "$dir/$1" ] && return 0
  done
  missing="$missing $2"
}
header jpeglib.h libjpeg62-turbo-dev
header png.h libpng-dev
header zlib.h zlib1g-dev
header nlohmann/json.hpp nlohmann-json3-dev
[ -z "$missing" ] && exit 0

command="apt-get install -y$missing"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make cpp: installing the missing build dependencies:$missing" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive $command && exit 0
  echo "error: '$command' failed; the C++ build needs:$missing" >&2
  exit 1
fi
echo "error: the C++ build needs these Debian packages:$missing" >&2
echo "       install them with: sudo $command" >&2
exit 1
