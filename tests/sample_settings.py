"""Settings of the small generated sample most tests share (the default sample is larger)."""

TEST_SAMPLE = dict(seed=0, n_trainval=40, n_test=20, size=96)
