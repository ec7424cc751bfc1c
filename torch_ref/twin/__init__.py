"""The torch twin: the description's network as torch.nn modules, trained by torch.optim, with
autograd's deltas and gradients (model.py). It starts from the same parameters as the
implementation and is the reference every comparison is made against."""
