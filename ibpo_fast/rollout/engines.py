"""Names of the generation engines (`rollout.sampler.HFSampler(engine=...)`), in a module without torch so
the config can check them before anything heavy is imported."""
ENGINES = ("decode", "generate")  # the lean decode loop (default), transformers' generate
