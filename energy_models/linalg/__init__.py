"""Linear algebra of grid precisions: the sparsity pattern of a 4- or 8-neighbour pixel grid (`grid`), the
grid precision as a `tf.linalg.LinearOperator` (`operators`), and positive-definiteness tools: a checked
Cholesky, the banded test, the smallest eigenvalue and the lowest eigenpairs (`positive_definite`)."""
