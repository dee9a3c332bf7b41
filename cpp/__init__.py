"""The Python side of the C++ pipeline: cpp.compare checks and measures build/cpp/classify against the core package.

CMake builds only src/ (CMakeLists.txt); this package is never compiled or installed with it.
"""
