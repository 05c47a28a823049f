"""Data: MNIST through tensorflow-datasets (`mnist`), photographs (`images`), patches cut from them
(`patches`, `patch_size`, `patch_files`), a user's arrays (`arrays`), seeded batches (`batches`) and the
memory check before loading (`memory`)."""
