import os

# The Triton kernels run on the CPU through the interpreter; it must be chosen before any kernel is
# decorated, i.e. before ibpo_fast.ops.triton_backend is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
