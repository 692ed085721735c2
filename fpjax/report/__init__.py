"""Writers of an evaluation's results: tables.md / tables.json, figures and report.md.

rows      the result row (`make_row`: every ROW_FIELDS key), labels, tables.json (`write_json`)
tables    tables.md (`markdown_tables`)
discussion  statements read off the rows' numbers (`discussion`)
document  report.md (`report_markdown`, `zoo_realism`)
figures   matplotlib figures (imported on first use)
"""
from fpjax.report.discussion import discussion
from fpjax.report.document import REALISM_COLUMNS, report_markdown, zoo_realism
from fpjax.report.figures import (plot_confusions, plot_embeddings, plot_mean_artifacts,
                                  plot_spectra)
from fpjax.report.rows import (ROW_FIELDS, TIMING_FIELDS, is_baseline, is_control, jsonable,
                               make_row, nmi_columns, row_label, write_json)
from fpjax.report.tables import chosen_settings, markdown_tables

__all__ = ['ROW_FIELDS', 'TIMING_FIELDS', 'REALISM_COLUMNS', 'chosen_settings', 'discussion',
           'is_baseline', 'is_control', 'jsonable', 'make_row', 'markdown_tables', 'nmi_columns',
           'plot_confusions', 'plot_embeddings', 'plot_mean_artifacts', 'plot_spectra',
           'report_markdown', 'row_label', 'write_json', 'zoo_realism']
