"""The zoo of classic backprop mistakes, and the planted bugs the tests use: one registry.

    mistakes.py   the zoo's mistakes (backprop-check zoo; TARGETs torch_ref.zoo.mistakes:Name): the MLP's,
                  then those of mistakes_layers.py, in a layer list's modules (convolution, pooling, ...),
                  then the sequence modules': mistakes_embedding.py, mistakes_rnn.py (LSTM, GRU: caught
                  at a time step), mistakes_attention.py
    planted.py    the test-only planted bugs, in the same registry
    faulty.py     what a mistake is, and how one is built into the manual engine (its one hook)
    runner.py     run the zoo: each mistake in lockstep, caught where the registry says
    ddp.py        the data-parallel mistakes (zoo --ddp)
"""
