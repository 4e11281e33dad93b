"""A test-only stand-in for engine.evaluation.llama_check that dies the way llama.cpp does on a bad CPU path."""

import faulthandler
import sys

if __name__ == "__main__":
    sys.stderr.write("ggml: about to take the AMX Q8_0 path\n")
    faulthandler.disable()  # a bare crash, as native code gives
    faulthandler._sigsegv()
