"""The data flow (`codetune prepare`): sources -> filters -> dedup/decontamination -> FIM -> tokens ->
packed train/valid splits on disk. Entry points: `codetune.data.run.run` and `load_prepared`."""
