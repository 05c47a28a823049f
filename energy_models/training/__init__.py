"""Training scaffolding shared by every trainer: resumable checkpoints and the divergence guard
(`checkpoints`), `tf.distribute` strategies and the per-replica loss share (`distribute`), checkpointable
random streams (`seeding`), optimisers by name (`optimizers`), TensorBoard (`tensorboard`) and progress bars
(`console`)."""
