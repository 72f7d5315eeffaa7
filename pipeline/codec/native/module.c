/*
 * latent-shards: the Python extension module `pipeline.codec._rans`.
 *
 * It exports no Python functions: pipeline/codec/fast_rans.py loads this module's shared
 * object with ctypes and calls `ls_rans_encode` / `ls_rans_decode` (rans.c, linked in) on
 * numpy buffers; ctypes releases the GIL for the call. Being an ordinary extension module, it
 * is compiled once, when the package is installed, not on first use.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef rans_module = {
    PyModuleDef_HEAD_INIT, "_rans",
    "CompressAI-compatible rANS coder (C); called through ctypes by pipeline.codec.fast_rans.",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rans(void) { return PyModule_Create(&rans_module); }
