__version__ = "0.1.0"

# `import mlnb` stays instant: the public API is looked up lazily, so nothing heavy (or even mlnb's own
# feature modules) is imported until a name is used. Each feature adds its public names here.
_API = {
    'drift': 'monitor.datadrift', 'DriftResult': 'monitor.datadrift', 'drift_profile': 'monitor.profiles',
    'explain': 'monitor.explanations', 'fairness': 'monitor.fair', 'card': 'monitor.cards',
    'MlnbError': 'core', 'emit': 'core', 'events': 'core',
    'settings': 'config', 'find_project': 'config', 'Project': 'config',
    'run': 'track.tracking', 'log': 'track.tracking', 'log_params': 'track.tracking', 'log_artifact': 'track.tracking', 'log_figure': 'track.tracking', 'set_tags': 'track.tracking', 'log_dataset': 'track.tracking', 'active_run': 'track.tracking', 'runs': 'track.table', 'sync': 'track.store',
    'register': 'serving.registry', 'promote': 'serving.registry', 'rollback': 'serving.registry', 'list_models': 'serving.registry', 'Gate': 'serving.registry',
    'serve': 'serving.server', 'served_log': 'track.predictions', 'served_performance': 'track.predictions', 'performance': 'track.predictions', 'audit_log': 'audit',
    'init': 'project', 'quickstart': 'pipeline.demo', 'use_template': 'pipeline.templates',
    'step': 'pipeline.steps', 'reproduce': 'pipeline.dag', 'pipeline_add': 'pipeline.dag',
    'train': 'training.loop', 'evaluate': 'training.metrics',
    'tune': 'tuning.study', 'TuneResult': 'tuning.result',
    'forget': 'govern.subjects', 'export_subject': 'govern.subjects', 'FieldPolicy': 'data.privacy',
    'predict_file': 'serving.scoring', 'quantize_model': 'serving.quantize', 'quantize_report': 'serving.scoring',
}

# The first house was flat; its modules now live in packages by concept. `import mlnb.registry` (or `from mlnb.quality
# import check`) still works and gives the module at its new place (`mlnb.serving.registry`), with a DeprecationWarning.
# A flat module later split in two maps to the part that kept its main names: `mlnb.logger` is the buffered logger
# (`sync`, the spool and the MLflow client are now `mlnb.track.store`), `mlnb.pipelines` runs steps (`reproduce` and
# `pipeline_add` are now `mlnb.pipeline.dag`).
_MOVED = {'logger': 'track.logger', 'quality': 'data.quality', 'explainer': 'monitor.explanations', 'cards': 'monitor.cards',
          'registry': 'serving.registry', 'batching': 'serving.batching', 'scoring': 'serving.scoring',
          'pipelines': 'pipeline.steps', 'templates': 'pipeline.templates', 'scheduler': 'pipeline.schedule',
          'retraining': 'pipeline.retraining', 'demo': 'pipeline.demo',
          **{f'widgets_{v}': f'widgets.{v}' for v in ('runs', 'data', 'monitor', 'registry', 'train', 'tune', 'pipeline')}}

class _MovedFinder:
    "Finds `mlnb.OLD` for a module that moved into a package, and gives the module at its new place."
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if not fullname.startswith('mlnb.') or fullname[5:] not in _MOVED: return None
        import importlib.util
        return importlib.util.spec_from_loader(fullname, _MovedFinder)
    @staticmethod
    def create_module(spec):
        import importlib, warnings
        new = f"mlnb.{_MOVED[spec.name[5:]]}"
        warnings.warn(f"{spec.name} is now {new}", DeprecationWarning, stacklevel=3)
        m = importlib.import_module(new)
        spec.loader_state = (m.__spec__, m.__loader__)
        return m
    @staticmethod
    def exec_module(module): module.__spec__, module.__loader__ = module.__spec__.loader_state  # the module keeps its own spec

import sys as _sys
if not any(getattr(f, '__name__', None) == '_MovedFinder' for f in _sys.meta_path): _sys.meta_path.append(_MovedFinder)  # once, even if mlnb is reloaded

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
