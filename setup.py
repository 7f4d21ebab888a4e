"""The one native piece of sqlml: the tree-ensemble scorer (sqlml/native/treewalk.c).

Everything else is in pyproject.toml. The C file has no Python.h and is loaded with ctypes; it is
optional: where it cannot be compiled, sqlml scores tree models with onnxruntime.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sqlml._treewalk",
            sources=["sqlml/native/treewalk.c"],
            extra_compile_args=["-O3"],
            libraries=["m"],  # expf, as onnxruntime's logistic calls it
            optional=True,
        ),
        Extension(
            "sqlml._tfidf",
            sources=["sqlml/native/tfidf.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
