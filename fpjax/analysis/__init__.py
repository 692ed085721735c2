"""The paper's evaluation: Tables 1-3, open-set / few-shot attribution, figures and report.

    from fpjax import analysis
    ev = analysis.evaluate('/tmp/zoo', workdir='/tmp/eval')     # a zoo or an image-folder root
    ev = analysis.run_demo('/tmp/fpjax_demo')                    # the main job, zoo included
"""
from fpjax.analysis import metrics, protocols, report
from fpjax.analysis.evaluate import (DEMO_CONFIG, Evaluation, evaluate, quiet_library_logs,
                                     run_demo)
from fpjax.analysis.metrics import (accuracy, confusion_matrix, fisher_discriminant_ratio, mean_std,
                                    nmi, split_per_class)
from fpjax.analysis.protocols import (GMDataset, KNOBS, MANIFPT_SPACES, compute_artifacts, load_gm,
                                      make_spaces, openset, table1, table2, table3)
from fpjax.analysis.report import markdown_tables, write_json

__all__ = ['metrics', 'protocols', 'report', 'DEMO_CONFIG', 'Evaluation', 'evaluate',
           'quiet_library_logs',
           'run_demo',
           'accuracy', 'confusion_matrix', 'fisher_discriminant_ratio', 'mean_std', 'nmi',
           'split_per_class', 'GMDataset', 'KNOBS', 'MANIFPT_SPACES', 'compute_artifacts',
           'load_gm', 'make_spaces', 'openset', 'table1', 'table2', 'table3', 'markdown_tables',
           'write_json']
