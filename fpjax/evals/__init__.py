"""The paper's evaluation: Tables 1-3, open-set / few-shot attribution, figures and report.

    from fpjax import evals
    ev = evals.evaluate({'gm': '/tmp/zoo'}, '/tmp/eval')  # keys of fpjax/configs/evaluate.py
    ev = evals.run_demo(configs.get_config('demo'), '/tmp/fpjax_demo')  # the main job

Artifacts are read from the stores `fpjax.compute_artifacts` writes (WORKDIR/artifacts/<gm>/
<space>), computed first when missing; nothing here projects images itself.

Modules, in the order a run uses them: gm_data (a zoo or image folder), encoders (SL/SSL),
features (artifact stores as lazy rows), splits (splits, the probe's selection), classifiers,
streamed (FDR and predictions over lazy rows), table1_accuracy (Table 1, paired differences),
table2_cross_dataset, table3_knobs, open_set, metrics; evaluate (the orchestration) and demo
(the main job). `fpjax.evals.evaluate` is the function; its module is
`importlib.import_module('fpjax.evals.evaluate')` or `from fpjax.evals.evaluate import ...`.
"""
from fpjax import report
from fpjax.artifact_job import Preempted
from fpjax.estimators import CONTROL
from fpjax.evals import metrics
from fpjax.evals.classifiers import CLASSIFIERS, SELECTION, selection_options
from fpjax.evals.encoders import ENCODER_SPACES, MANIFPT_SPACES, make_encoders
# demo before the function `evaluate` shadows the module of that name (demo reads the module).
from fpjax.evals.demo import run_demo
from fpjax.evals.evaluate import Evaluation, evaluate
from fpjax.evals.features import Features, artifact_store, open_features, store_dir
from fpjax.evals.gm_data import GMData, load_gm
from fpjax.evals.metrics import (accuracy, confusion_matrix, fisher_discriminant_ratio, mean_std,
                                 nmi, paired_bootstrap, split_per_class)
from fpjax.evals.open_set import openset
from fpjax.evals.splits import Choice, Split, make_splits, select_probe, stratified_sample
from fpjax.evals.table1_accuracy import BEST, diff_rows, table1
from fpjax.evals.table2_cross_dataset import table2
from fpjax.evals.table3_knobs import knob_nmi, table3
from fpjax.report import ROW_FIELDS, make_row, markdown_tables, write_json
from fpjax.store.rows import RowSubset

__all__ = ['metrics', 'report', 'Evaluation', 'Preempted', 'evaluate', 'run_demo',
           'accuracy', 'confusion_matrix', 'fisher_discriminant_ratio', 'mean_std', 'nmi',
           'paired_bootstrap', 'split_per_class', 'BEST', 'CLASSIFIERS', 'CONTROL',
           'ENCODER_SPACES', 'SELECTION', 'Choice', 'Features', 'GMData', 'RowSubset',
           'MANIFPT_SPACES', 'Split', 'artifact_store', 'diff_rows', 'knob_nmi', 'load_gm',
           'make_encoders', 'make_splits', 'open_features', 'openset', 'select_probe',
           'selection_options', 'store_dir', 'stratified_sample', 'table1', 'table2', 'table3',
           'ROW_FIELDS', 'make_row', 'markdown_tables', 'write_json']
