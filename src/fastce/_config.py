"""Numba settings for every kernel module, in one place.

Imported before any ``@njit`` decorator runs, because the cache location is
decided when a cached function is first compiled.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import stat
import tempfile
import threading

import numba
from numba.core.registry import CPUDispatcher

# Options shared by every kernel.  ``error_model="numpy"`` makes division by
# zero produce inf/nan instead of raising inside the kernel (the callers check
# the inputs that could cause it).  No fastmath: -inf logits are legal input,
# and "no-inf/no-nan" flags would let LLVM miscompile masked rows.
KERNEL_OPTIONS = dict(nogil=True, cache=True, error_model="numpy")
# The kernels' per-row and per-block steps: no reference counting.  numba
# takes a reference to every array argument on entry to a function and
# drops it on exit; once LLVM inlines such a function into a row loop, that
# is two atomic operations per array per row, on counters both threads
# share (C = 100: ~28% of the long-row kernel's time, perf profile), and a
# short-row block's dozen steps paid a dozen per block.  These functions
# allocate nothing and return no array, so they need no counts.
LEAF_OPTIONS = dict(KERNEL_OPTIONS, _nrt=False)
# The options of an @overload implementation (never called from Python): no entry wrappers, see kernel_step.
OVERLOAD_OPTIONS = dict(KERNEL_OPTIONS, no_cpython_wrapper=True, no_cfunc_wrapper=True)


def _step_pipeline():
    """A numba pipeline whose code library produces no machine code of its own (see kernel_step), or None.

    numba compiles every function it types to machine code (MCJIT) as soon as
    it is lowered, and again inside each caller, which links the function's
    optimised IR into its own module.  A kernel step is never called but from
    compiled kernels, so its own machine code is never run: this library keeps
    the IR for its callers and skips the code generation (a first ``evaluate``
    compiles ~0.5 s sooner, benchmarks/cold_start.py), and for most steps the
    module optimisation too (see StepCompiler: ~0.9 s more).  Its cache
    entry holds that IR (numba's "bitcode" form, made executable when loaded),
    since there is no object code to save.  Built on numba's JIT code library
    and compiler classes; None, when a numba release no longer has the methods
    it replaces: the steps are then compiled as before.
    """
    try:
        from numba.core import caching, compiler
        from numba.core.codegen import JITCodeLibrary
    except ImportError:  # pragma: no cover - numba internals moved
        return None
    needed = ("_optimize_final_module", "_finalize_final_module", "_finalize_dynamic_globals",
              "_verify_declare_only_symbols", "_ensure_finalized", "get_pointer_to_function",
              "serialize_using_bitcode", "serialize_using_object_code", "codegen", "_unserialize")
    if (not all(hasattr(JITCodeLibrary, name) for name in needed) or not hasattr(compiler.Compiler, "compile_extra")
            or not hasattr(getattr(caching, "CompileResultCacheImpl", None), "rebuild")
            or not hasattr(caching, "FunctionCache")):
        return None  # pragma: no cover - numba internals changed

    class _UnboundEnvironments:
        """The shared code generator, less ``set_env``: a step's module is never in the JIT engine, so it
        has no environment to bind there (its callers bind their own)."""

        def __init__(self, codegen):
            self._codegen = codegen

        def set_env(self, env_name, env):
            pass

        def __getattr__(self, name):
            return getattr(self._codegen, name)

    class StepLibrary(JITCodeLibrary):
        """A kernel step's code: LLVM IR that callers link in; no machine code of its own."""

        # Whether the step's module gets numba's module-level optimisation here (see StepCompiler).
        module_passes = True

        def _optimize_final_module(self):
            if self.module_passes:
                super()._optimize_final_module()

        def _finalize_final_module(self):
            # JITCodeLibrary's, less adding the module to the JIT engine and compiling it.
            self._finalize_dynamic_globals()
            self._verify_declare_only_symbols()
            self._finalized = True

        def get_pointer_to_function(self, name):
            self._ensure_finalized()
            return 0  # nothing here is executable; KernelStep refuses Python calls

        @property
        def codegen(self):
            return _UnboundEnvironments(self._codegen)

        def serialize_using_object_code(self):
            return self.serialize_using_bitcode()  # no object code: the cache keeps the IR

    class StepCompiler(compiler.Compiler):
        """numba's compiler, lowering into a StepLibrary.

        A step that LLVM inlines into its callers' loops (``inline_into_callers``)
        keeps its module optimisation: its callers' loops vectorise only over
        the optimised body (the two-class block stayed scalar without it,
        5.9 -> 33.9 ns a row, tests/test_vectorised.py).  The others -- walks,
        block finishes, wide-vector leaves -- skip it: each caller runs the
        module passes again on the module it links them into, with the step's
        own function attributes (its vector width, noinline), so the kernels'
        code is as fast (benchmarks/kernel_timing.py) and a first call compiles
        ~0.5-0.9 s sooner (benchmarks/cold_start.py).
        """

        def compile_extra(self, func):
            if self.state.library is None:
                library = StepLibrary(self.state.targetctx.codegen(), func.__qualname__)
                library.module_passes = "inline_into_callers" in func.__code__.co_names
                self.state.library = library
            return super().compile_extra(func)

    class StepCacheImpl(caching.CompileResultCacheImpl):
        """numba's cache of compile results, rebuilding a step's cached IR as a StepLibrary.

        numba rebuilds a cached library as its codegen's library class, a
        JIT library, which compiles the module to machine code as it loads
        and puts its functions in the JIT engine.  A caller compiled later in
        that process links its own optimised copy of the step (linkonce_odr),
        but the engine resolves the call to the definition it already holds:
        the step's IR compiled as cached -- without module optimisation for
        most steps (see StepCompiler).  A kernel compiled for a new signature
        (another dtype, weights) in a process that found its steps in the
        cache then ran ~4-8x slower for the life of that process (C = 10
        logits with float32 weights, one thread: 140-237 against 31 ns a row,
        /tmp script; the next process loads the whole kernel from the cache
        and was fast again), and every load spent a code generation.
        """

        def rebuild(self, target_context, payload):
            codegen = target_context.codegen()
            usual = codegen._library_class
            # numba loads cached functions inside its compiler lock: no other compilation sees the swap.
            codegen._library_class = StepLibrary
            try:
                return super().rebuild(target_context, payload)
            finally:
                codegen._library_class = usual

    class StepCache(caching.FunctionCache):
        """A kernel step's cache (see StepCacheImpl)."""

        _impl_class = StepCacheImpl

    return StepCompiler, StepCache


_STEP_PIPELINE, _STEP_CACHE = _step_pipeline() or (None, None)

# The options of an @overload(inline="always") implementation.  numba types such an implementation by compiling
# it whole (its dispatcher's get_call_template: lowering, the module passes over it and every step it links in,
# machine code), then throws that away and inlines its IR.  Compiled as a kernel step's (no module passes, no
# machine code; see _step_pipeline) and never cached (a cached copy would put the steps it links, unoptimised,
# in the JIT engine, where later kernels' calls to them would resolve: see StepCacheImpl), that costs ~0.7 s less
# a first general short-row evaluate (the dtype's walk, _walk_by_columns), ~0.1 s a long-row one.
INLINE_OVERLOAD_OPTIONS = dict(OVERLOAD_OPTIONS, cache=False)
if _STEP_PIPELINE is not None:
    INLINE_OVERLOAD_OPTIONS["pipeline_class"] = _STEP_PIPELINE


class KernelStep(CPUDispatcher):
    """A numba function that only other numba functions call (see kernel_step); never from Python."""

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.py_func.__module__}.{self.py_func.__qualname__} is a step of fastce's kernels, compiled to be "
            "called only from numba-compiled code: call it from an @njit function, or call the public API")


def kernel_step(**options):
    """``numba.njit(**options)`` for a function called only from other kernels, compiled without a Python entry.

    numba gives every function it compiles a CPython wrapper (unboxing each
    argument, boxing the result) and a C-callable one.  A step called only
    from compiled code never uses them, yet a first compile paid for both:
    LLVM IR, optimisation and machine code, about 20 ms a function (a first
    ``evaluate`` compiles some twenty steps; ``benchmarks/cold_start.py``).
    Without the wrapper numba's entry point for Python is a null pointer, so
    the dispatcher refuses Python calls (KernelStep) instead of jumping to it.
    Nor is its own machine code ever run: callers link its IR, so it is
    compiled with a code library that generates none (_step_pipeline).
    Cached like any kernel (the cache holds that IR); ``NUMBA_DISABLE_JIT``
    leaves the Python function.
    """

    def decorate(function):
        if numba.config.DISABLE_JIT:
            return function
        targetoptions = dict(options, nopython=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
        cache = targetoptions.pop("cache", False)
        pipeline = {} if _STEP_PIPELINE is None else {"pipeline_class": _STEP_PIPELINE}
        step = KernelStep(function, locals={}, targetoptions=targetoptions, **pipeline)
        if cache and _STEP_CACHE is not None:
            step._cache = _STEP_CACHE(function)  # enable_caching's, rebuilding without machine code (StepCacheImpl)
        elif cache:
            step.enable_caching()  # pragma: no cover - numba internals changed (see _step_pipeline)
        return step

    return decorate


def _light_load_cache():
    """A numba function cache that loads a cached kernel without numba's registry refresh, or None.

    Before every load from the on-disk cache numba "refreshes" its target
    context: it imports the modules that register its typing and lowering of
    numpy, the standard library, typed containers and the rest, and checks
    for BLAS, which imports ``scipy.linalg`` when scipy is installed.  A load
    needs none of that: it only links the cached machine code, whose
    external symbols are numba's C helpers and the Python C API (registered
    when numba is imported) and the runtime's allocator (NRT), which this
    load initialises.  The refresh cost a warm process 0.2-0.4 s before its
    first result (benchmarks/cold_start.py: the first ``evaluate`` from a warm
    cache, 1000 x 10 logits, 0.29-0.45 s with the refresh, 0.05-0.08 s
    without); a compile still refreshes first (numba's compiler does), so a
    kernel that must be compiled later in the process is typed as before.
    None when a numba release no longer has the methods this relies on: the
    kernels then load as numba loads them.
    """
    try:
        from numba.core import caching
        from numba.core.runtime import nrt
    except ImportError:  # pragma: no cover - numba internals moved
        return None
    if (not hasattr(caching.FunctionCache, "_load_overload")
            or not hasattr(caching.FunctionCache, "_guard_against_spurious_io_errors")
            or not hasattr(getattr(nrt, "rtsys", None), "initialize")):
        return None  # pragma: no cover - numba internals changed

    class LightLoadCache(caching.FunctionCache):
        def load_overload(self, sig, target_context):
            # numba's, less target_context.refresh(): the allocator's symbols are all a cached kernel needs.
            nrt.rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)

    return LightLoadCache


_LIGHT_LOAD_CACHE = _light_load_cache()


def kernel(**options):
    """``numba.njit(**options)`` for a kernel that Python calls, loaded from numba's cache without a registry
    refresh (see _light_load_cache); ``cache`` as numba's."""

    def decorate(function):
        light = options.get("cache", False) and _LIGHT_LOAD_CACHE is not None and not numba.config.DISABLE_JIT
        if not light:
            return numba.njit(**options)(function)
        dispatcher = numba.njit(**dict(options, cache=False))(function)
        dispatcher._cache = _LIGHT_LOAD_CACHE(function)  # enable_caching's, with the light load
        return dispatcher

    return decorate


# Rows in one block are summed in order in float64; blocks are the unit of
# parallel work and their sums are merged exactly.  The block size depends
# only on the number of classes, never on the thread count, which is what
# makes results identical for any number of threads.
BLOCK_ELEMENTS = 1 << 15
MAX_BLOCK_ROWS = 512
# Blocks handled by one parallel kernel call: bounds the per-call scratch
# (O(blocks x fields)) so memory never grows with N.
BLOCKS_PER_CALL = 512
# Scores per kernel call, at least, for reads without per-row buffers, within 8 x BLOCKS_PER_CALL blocks (see
# _accumulate.blocks_per_call): a call costs ~0.3 ms besides its rows (the pool's dispatch, the blocks' fold, the
# slices), and a call of 512 two-class blocks (262k rows, ~1 ms) paid it 512 times a GiB.  Only C < 16 reaches
# past 512 blocks.  Tests that set BLOCKS_PER_CALL to force many calls set this to 0.
CALL_MIN_SCORES = 1 << 22
# Rows per kernel call, at least, for reads that fold per-row values after each call (diagnose: see
# _accumulate.accumulate_matrix), within 4 x BLOCKS_PER_CALL blocks (64k rows: 3 MB of per-row buffers).
FOLD_MIN_ROWS = 1 << 16
# F-ordered or strided scores are copied to C order one kernel call at a time;
# calls are shortened so that this copy stays under this many bytes.
COPY_BYTES_PER_CALL = 4 << 20
# Inputs with fewer scores than this run on one thread (see _accumulate._run).
SERIAL_BELOW_ELEMENTS = 1 << 17


def block_rows(num_classes: int) -> int:
    """Rows per block for a score matrix with ``num_classes`` columns."""
    return max(1, min(MAX_BLOCK_ROWS, BLOCK_ELEMENTS // max(1, num_classes)))


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".fastce-probe-")
        probe.close()
        return True
    except OSError:
        return False


# Where fastce's own kernels are cached when numba's places are not writable (see _configure_cache_dir), or None.
FALLBACK_CACHE_DIR: str | None = None


def _private_dir(path: str) -> bool:
    """Whether ``path`` is a directory only this user can change (made with mode 0700 if absent): a real
    directory, not a symlink, owned by this user, writable by neither group nor others.

    Under the shared temp dir a predictable name may be anyone's, and numba
    unpickles the index files it finds in its cache: another local user who
    made the directory first (mode 0777) ran code in fastce's process.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    return _writable(path)


def _remove_own_cache_dir(path: str, owner: int) -> None:
    # Only by the process that made it: a forked child exiting had removed it under its parent, freeing a
    # known name another user could take again.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _configure_cache_dir() -> None:
    """Keep fastce's on-disk kernel cache usable where numba's places are not writable.

    numba writes next to the source when it can, to ``NUMBA_CACHE_DIR`` when
    set; when the place it would use is not writable (read-only image, no
    HOME, an unwritable NUMBA_CACHE_DIR) the ``cache=True`` decorators would
    fail at import.  fastce's own functions then cache in
    ``~/.cache/fastce/numba``, or a private per-user directory under the temp
    dir (``FALLBACK_CACHE_DIR``, used by the locator of _package_stamps):
    ``numba.config.CACHE_DIR`` stays as it was, so the host's own numba
    functions cache where they did before fastce was imported.
    """
    global FALLBACK_CACHE_DIR
    FALLBACK_CACHE_DIR = None
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        if _writable(user_dir):
            return
    elif _writable(os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")):
        return
    home = os.path.join(os.path.expanduser("~"), ".cache", "fastce", "numba")
    temp = os.path.join(tempfile.gettempdir(), f"fastce-numba-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    if _private_dir(home):  # under a HOME shared or owned by another user (HOME=/tmp, sudo), not blindly
        FALLBACK_CACHE_DIR = home
    elif _private_dir(temp):
        FALLBACK_CACHE_DIR = temp
    else:  # the per-user name taken (by another user, or not a private directory): this process's own, removed at exit
        try:
            FALLBACK_CACHE_DIR = tempfile.mkdtemp(prefix="fastce-numba-")  # mode 0700
        except OSError:
            return
        atexit.register(_remove_own_cache_dir, FALLBACK_CACHE_DIR, os.getpid())


_configure_cache_dir()

# The modules whose functions numba compiles (tests/test_cache.py checks the list against the sources), and this
# one: numba freezes the globals a kernel reads (block sizes, scratch rows) into its code.
KERNEL_SOURCES = (
    "_config", "_column_lanes", "_exactsum", "_label_presence", "_lanes", "_parallel", "_row_lanes", "_target_flags",
    "_transpose", "_vecmath", "compare_kernels", "compare_values", "diagnostics_kernels", "groups", "kernels",
    "kernels_binary", "kernels_soft", "multilabel_kernels",
)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def kernel_sources_stamp(directory: str = PACKAGE_DIR) -> bytes:
    """A digest of every KERNEL_SOURCES module's source (numba's own per-file content hash, combined).

    numba keys a cached function on its own file only, yet a kernel holds
    the code of the steps it calls from other modules (compare's kernels
    link kernels.py's steps): after an edit of kernels.py (``git pull`` on
    an editable install) compare_kernels' cached kernels loaded the old
    steps, their results differing from evaluate's.  With this digest in
    every fastce function's stamp, a change to any kernel module
    recompiles them all (see _package_stamps).
    """
    from numba.core import caching

    file_stamp = getattr(caching, "_hash_source_file", None)  # numba >= 0.68: a file's content; before: mtime and size
    digest = hashlib.sha256()
    for name in KERNEL_SOURCES:
        path = os.path.join(directory, name + ".py")
        try:
            st = os.stat(path)
        except OSError:  # not files (a zipped install): numba's own stamps only
            return b""
        stamp = file_stamp(path, st.st_mtime, st.st_size) if file_stamp else repr((st.st_mtime, st.st_size)).encode()
        digest.update(stamp)
    return digest.digest()


def _package_stamps() -> bool:
    """Put kernel_sources_stamp in the cache stamp of the functions defined in this package (others untouched).

    A locator class ahead of numba's: for a file of this package it wraps
    the locator numba would have chosen, adding the digest to its source
    stamp; for any other file it declines.  Left out (numba's stamps only)
    when a numba release lacks the internals it relies on.
    """
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - numba internals moved
        return False
    impl = getattr(caching, "CacheImpl", None)
    if impl is None or not isinstance(getattr(impl, "_locator_classes", None), list) or not hasattr(
            caching, "UserProvidedCacheLocator"):
        return False  # pragma: no cover - numba internals changed
    package = PACKAGE_DIR + os.sep

    class FallbackLocator(caching.UserProvidedCacheLocator):
        """numba's locator of NUMBA_CACHE_DIR, for FALLBACK_CACHE_DIR (numba.config.CACHE_DIR left alone)."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(FALLBACK_CACHE_DIR, self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.exists(py_file):
                return None
            locator = cls(py_func, py_file)
            try:
                locator.ensure_cache_path()
            except OSError:
                return None
            return locator

    class PackageStampLocator:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def get_source_stamp(self):
            return self._inner.get_source_stamp(), kernel_sources_stamp()

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.abspath(py_file).startswith(package):
                return None
            if FALLBACK_CACHE_DIR is not None:
                inner = FallbackLocator.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
            for other in impl._locator_classes:
                if other is not cls:
                    inner = other.from_function(py_func, py_file)
                    if inner is not None:
                        return cls(inner)
            return None

    if not any(getattr(c, "__name__", "") == "PackageStampLocator" for c in impl._locator_classes):
        impl._locator_classes = [PackageStampLocator, *impl._locator_classes]
    return True


if not _package_stamps() and FALLBACK_CACHE_DIR is not None:  # pragma: no cover - numba internals changed
    numba.config.CACHE_DIR = FALLBACK_CACHE_DIR  # the fallback for every numba function, as before

# One kernel call at a time: each already spreads its blocks over every
# thread (fastce._parallel), so two at once would only oversubscribe the
# cores.  Kernels release the GIL (nogil), so other Python threads keep
# running while one call holds the lock.
PARALLEL_LOCK = threading.RLock()


def _after_fork_in_child() -> None:
    # A fork while another thread held the lock (a call under way) left it held in the child for good: its first
    # call hung.  The child's threads are gone; so is any call.
    global PARALLEL_LOCK
    PARALLEL_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)

# Log (and let the CLI show) the first-use compiles of the kernels.
from fastce import _compile_log  # noqa: E402,F401  (registers its numba event listener)
# No cyclic garbage collection while numba compiles a kernel (fastce._compile_gc).
from fastce import _compile_gc  # noqa: E402,F401  (registers its numba event listener)
