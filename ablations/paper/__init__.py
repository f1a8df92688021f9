"""The paper's own numbers (paper Sec. 4, Tables 2-16): its printed complexity values with their sources
(``paper_values.yaml``, the one reference data file), our counts beside them (``tables``), and the rendered
tables (``render``) that ``senet-ablate complexity`` writes to ``results/complexity/``."""
