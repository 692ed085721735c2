"""The paper's evaluation: Tables 1-3, open-set / few-shot attribution, figures and report.

    from fpjax import evals
    ev = evals.evaluate('/tmp/zoo', workdir='/tmp/eval')     # a zoo or an image-folder root
    ev = evals.run_demo('/tmp/fpjax_demo')                    # the main job, zoo included

Artifacts are read from the stores `fpjax.compute_artifacts` writes (WORKDIR/artifacts/<gm>/
<space>), computed first when missing; nothing here projects images itself.
"""
from fpjax.evals import metrics
from fpjax.evals import protocols
from fpjax import report
from fpjax.evals.evaluate import (DEMO_CONFIG, Evaluation, baselines_arg, evaluate,
                                  quiet_library_logs, run_demo)
from fpjax.artifact_job import Preempted
from fpjax.evals.metrics import (accuracy, confusion_matrix, fisher_discriminant_ratio, mean_std,
                                 nmi, split_per_class)
from fpjax.evals.protocols import (CLASSIFIERS, CONTROL, ENCODER_SPACES, SELECTION, Features,
                                   GMData, RowSubset, MANIFPT_SPACES, Split, artifact_store,
                                   diff_rows, load_gm, make_encoders, make_splits, open_features,
                                   openset, select_probe, table1, table2, table3)
from fpjax.report import ROW_FIELDS, make_row, markdown_tables, write_json

__all__ = ['metrics', 'protocols', 'report', 'DEMO_CONFIG', 'Evaluation', 'Preempted',
           'baselines_arg', 'evaluate',
           'quiet_library_logs', 'run_demo',
           'accuracy', 'confusion_matrix', 'fisher_discriminant_ratio', 'mean_std', 'nmi',
           'split_per_class', 'CLASSIFIERS', 'CONTROL', 'ENCODER_SPACES', 'SELECTION', 'Features',
           'GMData', 'RowSubset', 'MANIFPT_SPACES', 'Split', 'artifact_store', 'diff_rows',
           'load_gm', 'make_encoders', 'make_splits', 'open_features', 'openset', 'select_probe',
           'table1', 'table2', 'table3', 'ROW_FIELDS', 'make_row', 'markdown_tables',
           'write_json']
