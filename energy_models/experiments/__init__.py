"""The front ends, the only layer that knows flags: the configurations of the command-line trainers in
train/ (`gaussian_config`, `dem_config`, `score_config`), the pipelines they run (`gaussian`, `dem`,
`score`), run folders (`rundir`), and the same pipelines on arrays from Python (`fit`)."""
