__version__ = "0.1.0"

# `import mlnb` stays instant: the public API is looked up lazily, so nothing heavy (or even mlnb's own
# feature modules) is imported until a name is used. Each feature adds its public names here.
_API = {
    'drift': 'monitor', 'DriftResult': 'monitor', 'drift_profile': 'monitor',
    'explain': 'explainer', 'fairness': 'explainer', 'card': 'cards',
    'MlnbError': 'core', 'emit': 'core', 'events': 'core',
    'settings': 'config', 'find_project': 'config', 'Project': 'config',
    'run': 'track', 'log': 'track', 'log_params': 'track', 'log_artifact': 'track', 'log_figure': 'track', 'set_tags': 'track', 'log_dataset': 'track', 'active_run': 'track', 'runs': 'track', 'sync': 'logger',
    'register': 'registry', 'promote': 'registry', 'rollback': 'registry', 'list_models': 'registry', 'Gate': 'registry',
    'serve': 'serving', 'served_log': 'batching', 'served_performance': 'batching', 'performance': 'batching', 'audit_log': 'audit',
    'init': 'project', 'quickstart': 'demo', 'use_template': 'templates',
    'step': 'pipelines', 'reproduce': 'pipelines', 'pipeline_add': 'pipelines',
    'train': 'training', 'evaluate': 'training',
    'tune': 'tuning', 'TuneResult': 'tuning',
    'predict_file': 'scoring', 'quantize_model': 'quantize', 'quantize_report': 'scoring',
}

def __getattr__(name):
    import importlib
    if name in _API:
        val = getattr(importlib.import_module(f"mlnb.{_API[name]}"), name)
        globals()[name] = val
        return val
    if not name.startswith('_'):
        try: return importlib.import_module(f"mlnb.{name}")  # submodules: mlnb.config, mlnb.data, ...
        except ModuleNotFoundError as e:
            if e.name != f"mlnb.{name}": raise
    raise AttributeError(f"module 'mlnb' has no attribute '{name}'")

def __dir__(): return sorted(set(globals()) | set(_API))

def load_ipython_extension(ipython):
    "`%load_ext mlnb`: register the `%mlnb` magic."
    from mlnb.magics import load_ipython_extension as load
    load(ipython)

def unload_ipython_extension(ipython):
    "`%unload_ext mlnb`: remove the `%mlnb` magic."
    from mlnb.magics import unload_ipython_extension as unload
    unload(ipython)
