"""The run lifecycle: settings check against the corpus, plan and waves, the output lock, the engine, live progress and the console."""
