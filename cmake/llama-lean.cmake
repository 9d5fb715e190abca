# Included by llama.cpp's project() call when `make install` builds llama-cpp-python from source
# (CMAKE_ARGS in the Makefile passes -DCMAKE_PROJECT_llama.cpp_INCLUDE=<this file>).
#
# asyncpipe loads only libllama and libggml* through llama-cpp-python's ctypes bindings. llama-cpp-python
# forces llama.cpp's "common" library ON (a CACHE FORCE, so -DLLAMA_BUILD_COMMON=OFF alone cannot turn it
# off); it is used by llama.cpp's own programs, never by the Python package, and it pulls in cpp-httplib,
# one of the slowest files to compile. A normal variable in llama.cpp's directory scope shadows the forced
# cache entry, and option() leaves it alone (policy CMP0077), so common and cpp-httplib are skipped.
set(LLAMA_BUILD_COMMON OFF)
