"""The compiled kernels of the one-query search path (src/matsearch/_kernels.c, _fastscan.c) and the store's
direct-I/O reader (_direct.c); the rest is in pyproject.toml."""

from setuptools import Extension, setup

# float sums may be reordered so the dot products vectorise (AVX-512/AVX2 clones are picked at load time)
FLAGS = ["-O3", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-fno-math-errno"]

SHARED = ["src/matsearch/_rows.h"]

setup(ext_modules=[Extension("matsearch._kernels", ["src/matsearch/_kernels.c"], depends=SHARED, extra_compile_args=FLAGS),
                   Extension("matsearch._fastscan", ["src/matsearch/_fastscan.c"], depends=SHARED,
                             extra_compile_args=FLAGS),
                   Extension("matsearch._direct", ["src/matsearch/_direct.c"], extra_compile_args=["-O2"])])
