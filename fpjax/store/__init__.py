"""Stores in a work directory: the artifact store (the one hand-off from computing to analysing)
and the lazy row views it reads through."""
from fpjax.store import rows
from fpjax.store.artifact_store import (BAD_LABEL, COMPLETE, FORMAT, ArtifactStore,
                                        ArtifactWriter, artifact_field, is_complete, stats_path,
                                        write_index)
from fpjax.store.rows import FileList, RowSubset, ZarrRows, store_rows
