"""Auditor of what a Snakemake ``script:`` job reads from its ``snakemake`` object (tests/test_job_params.py).

Active only when BEYOND_IMAGENET_PARAMS_AUDIT_DIR is set; the test puts this folder first on
PYTHONPATH, so every Python process started under that environment (Snakemake runs a script job as
``<python> .snakemake/scripts/tmpXXXX.<name>.py`` through a shell that inherits the environment)
imports this module at start-up.

How it works. The job's script starts with a preamble that unpickles a
``snakemake.iocontainers.Snakemake`` object. Before that, the import of ``snakemake.iocontainers``
is intercepted (a meta-path finder; nothing else is imported at start-up) and the class is patched:

* ``__setstate__``: called by the unpickling; registers the object as the job's (rule name from
  ``snakemake.rule``, wildcards, the declared params: names, and the first-level keys of every
  dict-valued one) and an at-exit writer of one JSON record for the job.
* ``config``: a data descriptor, so ``snakemake.config`` (stored in the instance ``__dict__``) is
  looked up through it: each access is recorded with the call stack that made it; the config handed
  out is a key-recording dict, so the first-level config keys then read are recorded too.
* ``params``: the property is wrapped: the ``Params`` it returns records which names are read
  (attribute, ``[name]``, ``[index]``, ``.get``, ``.items()``, iteration); each dict-valued param is
  handed out as a key-recording dict (first-level keys; see ``_KeyDict`` for what counts as a read).

Also recorded: every ``open()`` of a file listed in BEYOND_IMAGENET_PARAMS_AUDIT_CONFIGFILES (the
study config file, and the default config.yaml: a config read behind Snakemake's back), and
``sys.executable`` (to show that the job ran in this interpreter, not in a conda env), and the
job's wall time from start-up to exit.

Record: ``$BEYOND_IMAGENET_PARAMS_AUDIT_DIR/<rule>-<pid>-<ns>.json``; written at interpreter exit,
also when the script raised (not on ``os._exit``, as forked worker processes end).
"""

import os
import sys
import time

_T0 = time.time()
_DIR = os.environ.get("BEYOND_IMAGENET_PARAMS_AUDIT_DIR")
_MODULE = "snakemake.iocontainers"
_HERE = os.path.abspath(__file__)

_JOB = None  # the record of this process's job, once its Snakemake object is unpickled


def _stack(skip=2, depth=8):
    """``file:line (function)`` of the callers, innermost first, leaving out this module."""
    frames, frame = [], sys._getframe(skip)
    while frame is not None and len(frames) < depth:
        code = frame.f_code
        if os.path.abspath(code.co_filename) != _HERE:
            frames.append(f"{code.co_filename}:{frame.f_lineno} ({code.co_name})")
        frame = frame.f_back
    return frames


class _KeyDict(dict):
    """A dict that records which of its first-level keys are read, into ``self._audit_reads``.

    A single-key read (``[k]``, ``get``, ``in``, ``pop``, ``setdefault``) records that key; anything
    that hands out the whole content (iteration, ``keys``/``values``/``items``, ``copy``, ``==``,
    ``|``, ``repr``) records every key. ``{**d}``, ``dict(d)``, ``f(**d)``, ``json.dumps``,
    ``copy.deepcopy`` and pickling go through these (a dict subclass with its own ``__iter__`` is
    not copied by the C fast path). Not seen: C code calling ``PyDict_GetItem`` on it directly, or
    ``dict.__getitem__(d, k)`` spelled out.
    """

    __slots__ = ("_audit_reads",)

    def _read(self, key):
        reads = getattr(self, "_audit_reads", None)
        if reads is not None:
            try:
                reads.add(str(key))
            except Exception:
                pass

    def _read_all(self):
        for key in dict.keys(self):
            self._read(key)

    def __getitem__(self, key):
        self._read(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._read(key)
        return dict.get(self, key, default)

    def __contains__(self, key):
        self._read(key)
        return dict.__contains__(self, key)

    def pop(self, key, *default):
        self._read(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key, default=None):
        self._read(key)
        return dict.setdefault(self, key, default)

    def __iter__(self):
        self._read_all()
        return dict.__iter__(self)

    def keys(self):
        self._read_all()
        return dict.keys(self)

    def values(self):
        self._read_all()
        return dict.values(self)

    def items(self):
        self._read_all()
        return dict.items(self)

    def copy(self):
        self._read_all()
        return dict(dict.items(self))

    def __eq__(self, other):
        self._read_all()
        return dict.__eq__(self, other)

    def __ne__(self, other):
        self._read_all()
        return dict.__ne__(self, other)

    __hash__ = None

    def __or__(self, other):
        self._read_all()
        return dict(dict.items(self)) | other

    def __ror__(self, other):
        self._read_all()
        return other | dict(dict.items(self))

    def __repr__(self):
        self._read_all()
        return dict.__repr__(self)

    def __reduce_ex__(self, protocol):
        # pickle / copy / deepcopy: a plain dict of the content (every key read)
        self._read_all()
        return (dict, (dict(dict.items(self)),))


def _key_dict(value, reads):
    wrapped = _KeyDict(value)
    wrapped._audit_reads = reads
    return wrapped


def _write_record():
    import json

    job = _JOB
    if job is None or job["pid"] != os.getpid():
        return  # not the job's process (e.g. a forked worker that did exit normally)
    record = dict(job)
    main = sys.modules.get("__main__")  # the preamble sets __file__ to the rule's script
    record["script"] = str(getattr(main, "__file__", "") or job["script"])
    record["seconds"] = round(time.time() - _T0, 2)  # interpreter start-up to exit
    record["params_read"] = sorted(job["params_read"])
    record["dict_params"] = {name: {"declared_keys": keys, "read_keys": sorted(job["_key_reads"][name])}
                             for name, keys in job["dict_params"].items()}
    record["config_keys_read"] = sorted(job["config_keys_read"])
    del record["_key_reads"]
    os.makedirs(_DIR, exist_ok=True)
    path = os.path.join(_DIR, f"{job['rule']}-{job['pid']}-{time.time_ns()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, sort_keys=True, default=str)
    os.replace(path + ".tmp", path)


def _open_hook(configfiles):
    def hook(event, args):
        if event == "open" and _JOB is not None and args and isinstance(args[0], (str, bytes, os.PathLike)):
            try:
                path = os.path.realpath(os.fsdecode(args[0]))
            except Exception:
                return
            if path in configfiles:
                _JOB["configfile_opens"].append({"path": path, "where": _stack(skip=2)})

    return hook


def _register(obj):
    """The job's Snakemake object was just unpickled: start its record."""
    global _JOB
    import atexit

    state = obj.__dict__
    store = state.get("_params_store")
    declared, dict_params = [], {}
    if store is not None:
        for name, (index, end) in store._get_names():
            declared.append(name)
            value = store[index] if end is None else None
            if isinstance(value, dict):
                dict_params[name] = sorted(str(k) for k in value)
    wildcards = state.get("wildcards")
    _JOB = {
        "rule": state.get("rule"),
        "pid": os.getpid(),
        "executable": sys.executable,
        "script": os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "",
        "wildcards": {k: str(v) for k, v in wildcards.items()} if wildcards is not None else {},
        "params_declared": declared,
        "params_read": set(),
        "dict_params": dict_params,
        "_key_reads": {name: set() for name in dict_params},
        "config_reads": [],
        "config_keys_read": set(),
        "configfile_opens": [],
    }
    atexit.register(_write_record)
    configfiles = {os.path.realpath(p) for p in
                   os.environ.get("BEYOND_IMAGENET_PARAMS_AUDIT_CONFIGFILES", "").split(os.pathsep) if p}
    if configfiles:
        sys.addaudithook(_open_hook(configfiles))


def _is_job(obj):
    return _JOB is not None and obj.__dict__.get("_audit_job", False)


class _ConfigDescriptor:
    """``snakemake.config`` of the job's object: recorded, then handed out as a key-recording dict."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        config = obj.__dict__.get("config")
        if not _is_job(obj):
            return config
        _JOB["config_reads"].append({"where": _stack()})
        if isinstance(config, dict):
            cached = obj.__dict__.get("_audit_config")
            if cached is None:
                cached = _key_dict(config, _JOB["config_keys_read"])
                obj.__dict__["_audit_config"] = cached
            return cached
        return config

    def __set__(self, obj, value):
        obj.__dict__["config"] = value


def _patch(module):
    cls = module.Snakemake
    Params = module.Params
    original_params = cls.__dict__["params"]

    class AuditedParams(Params):
        """Params that record which names are read into the job record."""

        def _audit_name(self, name):
            names = object.__getattribute__(self, "_names")
            if name in names:
                _JOB["params_read"].add(name)

        def _audit_index(self, index):
            names = object.__getattribute__(self, "_names")
            n = list.__len__(self)
            picked = set(range(n)[index]) if isinstance(index, slice) else {index % n if n else index}
            for name, (start, end) in names.items():
                if picked & set(range(start, start + 1 if end is None else end)):
                    _JOB["params_read"].add(name)

        def __getattribute__(self, name):
            if not name.startswith("__") and name not in ("_names", "_audit_name", "_audit_index"):
                object.__getattribute__(self, "_audit_name")(name)
            return super().__getattribute__(name)

        def __getitem__(self, key):
            if not isinstance(key, str):
                self._audit_index(key)
            return super().__getitem__(key)

        def get(self, key, default_value=None):
            self._audit_name(key)
            return super().get(key, default_value)

        def __iter__(self):
            for name in object.__getattribute__(self, "_names"):
                _JOB["params_read"].add(name)
            return super().__iter__()

    def params(self):
        value = original_params.fget(self)
        if not _is_job(self):
            return value
        value.__class__ = AuditedParams
        for name, (index, end) in list(object.__getattribute__(value, "_names").items()):
            item = list.__getitem__(value, index)
            if end is None and type(item) is dict and name in _JOB["_key_reads"]:
                wrapped = _key_dict(item, _JOB["_key_reads"][name])
                list.__setitem__(value, index, wrapped)
                object.__setattr__(value, name, wrapped)
        return value

    def __setstate__(self, state):
        self.__dict__.update(state)
        if _JOB is None:
            _register(self)
            self.__dict__["_audit_job"] = True

    cls.__setstate__ = __setstate__
    cls.config = _ConfigDescriptor()
    cls.params = property(params, doc=original_params.__doc__)

    try:  # a yaml dump of a param still works (yaml represents exact dicts only)
        import yaml

        for dumper in (yaml.SafeDumper, yaml.Dumper):
            yaml.add_representer(_KeyDict, yaml.representer.SafeRepresenter.represent_dict, Dumper=dumper)
    except Exception:
        pass


class _Finder:
    """Meta-path finder: lets ``snakemake.iocontainers`` load normally, then patches it."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _chain_other_sitecustomize():
    """Run the sitecustomize this module shadows, if any."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(_HERE)
    others = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.origin and os.path.abspath(spec.origin) != _HERE:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if _DIR:
    sys.meta_path.insert(0, _Finder())
_chain_other_sitecustomize()
