"""What the tests share: reference implementations of the SPEC, the CUDA emulator, and
the cases several test files run."""
