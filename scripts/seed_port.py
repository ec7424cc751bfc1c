"""The seed's own per-neuron network, ported faithfully, behind the plug-in interface.

    backprop-check run worked_example --impl scripts/seed_port.py:build
    python scripts/seed_port.py                 # the seed's own driver and printout (10000 lines)
    python scripts/seed_port.py --every 1000    # the same, every 1000th line

The classes NeuralNetwork, NeuronLayer and Neuron are the seed's code (the blog post's listing)
with its structure kept: plain Python lists, one loop per neuron and per weight, one bias per
layer shared by its neurons and never updated, `train` computing the output neurons' pd values,
then the hidden neurons' (from the output weights *before* they change), then updating the output
weights, then the hidden weights. The port adds only what the plug-in interface needs, each
marked `# port:`: the learning rate comes from the description (the seed's class constant is
0.5), and `train` records the pd values it computes so that `train_step` can report them as
deltas and gradients.

Targets: the seed's code trains on `nn.train([0.05, 0.1], [0.01, 0.09])`, a typo for the text's
[0.01, 0.99]. The plug-in takes its targets from the description (the worked example's are the
text's, [0.01, 0.99]); `main()` below replays the seed's driver as printed, 0.09 included, unless
--text-targets is given.

One quirk of the seed is kept on purpose: `NeuronLayer` takes `bias if bias else random.random()`,
so a layer whose bias is exactly 0 gets a random one. The cross-check catches it (at iteration 0,
stage output); see tests/test_seed_port.py.
"""
import argparse
import math
import random

# --- the seed's code ------------------------------------------------------------------------------

#
# 参数解释 (names):
# "pd_" : partial derivative (偏导)
# "d_" : derivative (导数)
# "w_ho" : index of a hidden-to-output weight
# "w_ih" : index of an input-to-hidden weight


class NeuralNetwork:
    LEARNING_RATE = 0.5

    def __init__(self, num_inputs, num_hidden, num_outputs, hidden_layer_weights=None,
                 hidden_layer_bias=None, output_layer_weights=None, output_layer_bias=None):
        self.num_inputs = num_inputs

        self.hidden_layer = NeuronLayer(num_hidden, hidden_layer_bias)
        self.output_layer = NeuronLayer(num_outputs, output_layer_bias)

        self.init_weights_from_inputs_to_hidden_layer_neurons(hidden_layer_weights)
        self.init_weights_from_hidden_layer_neurons_to_output_layer_neurons(output_layer_weights)

    def init_weights_from_inputs_to_hidden_layer_neurons(self, hidden_layer_weights):
        weight_num = 0
        for h in range(len(self.hidden_layer.neurons)):
            for i in range(self.num_inputs):
                if not hidden_layer_weights:
                    self.hidden_layer.neurons[h].weights.append(random.random())
                else:
                    self.hidden_layer.neurons[h].weights.append(hidden_layer_weights[weight_num])
                weight_num += 1

    def init_weights_from_hidden_layer_neurons_to_output_layer_neurons(self, output_layer_weights):
        weight_num = 0
        for o in range(len(self.output_layer.neurons)):
            for h in range(len(self.hidden_layer.neurons)):
                if not output_layer_weights:
                    self.output_layer.neurons[o].weights.append(random.random())
                else:
                    self.output_layer.neurons[o].weights.append(output_layer_weights[weight_num])
                weight_num += 1

    def inspect(self):
        print('-----')
        print('* Inputs: {}'.format(self.num_inputs))
        print('-----')
        print('Hidden Layer')
        self.hidden_layer.inspect()
        print('-----')
        print('* Output Layer')
        self.output_layer.inspect()
        print('-----')

    def feed_forward(self, inputs):
        hidden_layer_outputs = self.hidden_layer.feed_forward(inputs)
        return self.output_layer.feed_forward(hidden_layer_outputs)

    def train(self, training_inputs, training_outputs):
        self.feed_forward(training_inputs)

        # 1. output neurons' deltas
        pd_errors_wrt_output_neuron_total_net_input = [0] * len(self.output_layer.neurons)
        for o in range(len(self.output_layer.neurons)):

            # ∂E/∂z_j
            pd_errors_wrt_output_neuron_total_net_input[o] = \
                self.output_layer.neurons[o].calculate_pd_error_wrt_total_net_input(training_outputs[o])

        # 2. hidden neurons' deltas
        pd_errors_wrt_hidden_neuron_total_net_input = [0] * len(self.hidden_layer.neurons)
        for h in range(len(self.hidden_layer.neurons)):

            # dE/dy_j = Σ ∂E/∂z_j * ∂z_j/∂y_j = Σ ∂E/∂z_j * w_ij
            d_error_wrt_hidden_neuron_output = 0
            for o in range(len(self.output_layer.neurons)):
                d_error_wrt_hidden_neuron_output += \
                    pd_errors_wrt_output_neuron_total_net_input[o] * self.output_layer.neurons[o].weights[h]

            # ∂E/∂z_j = dE/dy_j * ∂z_j/∂
            pd_errors_wrt_hidden_neuron_total_net_input[h] = \
                d_error_wrt_hidden_neuron_output * self.hidden_layer.neurons[h].calculate_pd_total_net_input_wrt_input()

        self.pd_output = pd_errors_wrt_output_neuron_total_net_input  # port: recorded for train_step
        self.pd_hidden = pd_errors_wrt_hidden_neuron_total_net_input  # port: recorded for train_step
        self.pd_output_weights = [[None] * len(n.weights) for n in self.output_layer.neurons]  # port
        self.pd_hidden_weights = [[None] * len(n.weights) for n in self.hidden_layer.neurons]  # port

        # 3. update the output layer's weights
        for o in range(len(self.output_layer.neurons)):
            for w_ho in range(len(self.output_layer.neurons[o].weights)):

                # ∂E_j/∂w_ij = ∂E/∂z_j * ∂z_j/∂w_ij
                pd_error_wrt_weight = pd_errors_wrt_output_neuron_total_net_input[o] * \
                    self.output_layer.neurons[o].calculate_pd_total_net_input_wrt_weight(w_ho)
                self.pd_output_weights[o][w_ho] = pd_error_wrt_weight  # port: recorded for train_step

                # Δw = α * ∂E_j/∂w_i
                self.output_layer.neurons[o].weights[w_ho] -= self.LEARNING_RATE * pd_error_wrt_weight

        # 4. update the hidden layer's weights
        for h in range(len(self.hidden_layer.neurons)):
            for w_ih in range(len(self.hidden_layer.neurons[h].weights)):

                # ∂E_j/∂w_i = ∂E/∂z_j * ∂z_j/∂w_i
                pd_error_wrt_weight = pd_errors_wrt_hidden_neuron_total_net_input[h] * \
                    self.hidden_layer.neurons[h].calculate_pd_total_net_input_wrt_weight(w_ih)
                self.pd_hidden_weights[h][w_ih] = pd_error_wrt_weight  # port: recorded for train_step

                # Δw = α * ∂E_j/∂w_i
                self.hidden_layer.neurons[h].weights[w_ih] -= self.LEARNING_RATE * pd_error_wrt_weight

    def calculate_total_error(self, training_sets):
        total_error = 0
        for t in range(len(training_sets)):
            training_inputs, training_outputs = training_sets[t]
            self.feed_forward(training_inputs)
            for o in range(len(training_outputs)):
                total_error += self.output_layer.neurons[o].calculate_error(training_outputs[o])
        return total_error


class NeuronLayer:
    def __init__(self, num_neurons, bias):

        # the neurons of a layer share one bias b (同一层的神经元共享一个截距项b)
        self.bias = bias if bias else random.random()

        self.neurons = []
        for i in range(num_neurons):
            self.neurons.append(Neuron(self.bias))

    def inspect(self):
        print('Neurons:', len(self.neurons))
        for n in range(len(self.neurons)):
            print(' Neuron', n)
            for w in range(len(self.neurons[n].weights)):
                print(' Weight:', self.neurons[n].weights[w])
            print(' Bias:', self.bias)

    def feed_forward(self, inputs):
        outputs = []
        for neuron in self.neurons:
            outputs.append(neuron.calculate_output(inputs))
        return outputs

    def get_outputs(self):
        outputs = []
        for neuron in self.neurons:
            outputs.append(neuron.output)
        return outputs


class Neuron:
    def __init__(self, bias):
        self.bias = bias
        self.weights = []

    def calculate_output(self, inputs):
        self.inputs = inputs
        self.output = self.squash(self.calculate_total_net_input())
        return self.output

    def calculate_total_net_input(self):
        total = 0
        for i in range(len(self.inputs)):
            total += self.inputs[i] * self.weights[i]
        return total + self.bias

    # the activation function: sigmoid (激活函数)
    def squash(self, total_net_input):
        return 1 / (1 + math.exp(-total_net_input))

    def calculate_pd_error_wrt_total_net_input(self, target_output):
        return self.calculate_pd_error_wrt_output(target_output) * self.calculate_pd_total_net_input_wrt_input()

    # each neuron's error is the squared-error formula (每一个神经元的误差是由平方差公式计算的)
    def calculate_error(self, target_output):
        return 0.5 * (target_output - self.output) ** 2

    def calculate_pd_error_wrt_output(self, target_output):
        return -(target_output - self.output)

    def calculate_pd_total_net_input_wrt_input(self):
        return self.output * (1 - self.output)

    def calculate_pd_total_net_input_wrt_weight(self, index):
        return self.inputs[index]


# --- the plug-in interface (port) ---------------------------------------------------------------

SUPPORTED = {"activation": "sigmoid", "bias": "shared-frozen", "loss": "half-sse", "optimizer": "sgd"}


class SeedPort:
    """`load_state_dict` / `train_step` around a NeuralNetwork, one sample per step as the seed trains.

    Reports output, loss, deltas (the pd values of step 1 and 2 of `train`), grads (the
    pd_error_wrt_weight of steps 3 and 4) and the state_dict after the update, as plain Python lists:
    the plug-in interface converts them.
    """

    def __init__(self, desc):
        self.sizes = desc["network"]["sizes"]
        self.lr = desc["optimizer"]["lr"]
        self.nn = None

    def load_state_dict(self, state):
        n_in, n_hidden, n_out = self.sizes
        flat = lambda a: [float(v) for v in a.reshape(-1)]  # row-major = the seed's weight_num order
        self.nn = NeuralNetwork(n_in, n_hidden, n_out,
                                hidden_layer_weights=flat(state["layers.0.weight"]),
                                hidden_layer_bias=float(state["layers.0.bias"]),
                                output_layer_weights=flat(state["layers.1.weight"]),
                                output_layer_bias=float(state["layers.1.bias"]))
        self.nn.LEARNING_RATE = self.lr  # port: the description's learning rate

    def train_step(self, x, y):
        inputs, targets = [float(v) for v in x[0]], [float(v) for v in y[0]]
        self.nn.train(inputs, targets)
        out_layer = self.nn.output_layer
        # train() ran the forward pass before updating: the neurons still hold its outputs
        loss = sum(out_layer.neurons[o].calculate_error(targets[o]) for o in range(len(targets)))
        return {
            "output": [out_layer.get_outputs()],
            "loss": loss,
            "deltas": {"layers.0": [self.nn.pd_hidden], "layers.1": [self.nn.pd_output]},
            "grads": {"layers.0.weight": self.nn.pd_hidden_weights, "layers.1.weight": self.nn.pd_output_weights},
            "state_dict": self.state_dict(),
        }

    def state_dict(self):
        hidden, output = self.nn.hidden_layer, self.nn.output_layer
        return {"layers.0.weight": [list(n.weights) for n in hidden.neurons], "layers.0.bias": hidden.bias,
                "layers.1.weight": [list(n.weights) for n in output.neurons], "layers.1.bias": output.bias}


def build(desc):
    """The plug-in factory: `--impl scripts/seed_port.py:build`. Refuses what the seed cannot do."""
    net, opt = desc["network"], desc["optimizer"]
    problems = []
    if len(net["sizes"]) != 3:
        problems.append(f"exactly one hidden layer (network.sizes has {len(net['sizes'])} entries)")
    if any(a != "sigmoid" for a in net["activation"]):
        problems.append("sigmoid activations")
    for key in ("bias", "loss"):
        if net[key] != SUPPORTED[key]:
            problems.append(f"network.{key} = {SUPPORTED[key]!r}")
    extra = {k: v for k, v in opt.items() if k not in ("name", "lr") and v}  # momentum etc., if set
    if opt["name"] != "sgd" or extra:
        problems.append("plain SGD (optimizer.name = 'sgd' with lr only)")
    if desc["data"]["batch_size"] != 1:
        problems.append("one sample per step (data.batch_size = 1)")
    if problems:
        raise ValueError("the seed's network supports only " + "; ".join(problems))
    return SeedPort(desc)


# --- the seed's own driver ------------------------------------------------------------------------

SEED_TARGETS = [0.01, 0.09]   # as the seed's code has it (the text's target for o2 is 0.99)
TEXT_TARGETS = [0.01, 0.99]
ITERATIONS = 10000


def main():
    ap = argparse.ArgumentParser(description="Replay the seed's driver with its per-neuron network.")
    ap.add_argument("--every", type=int, default=1, help="print every N-th line (the seed prints all)")
    ap.add_argument("--text-targets", action="store_true", help="train on the text's [0.01, 0.99]")
    args = ap.parse_args()
    targets = TEXT_TARGETS if args.text_targets else SEED_TARGETS

    nn = NeuralNetwork(2, 2, 2, hidden_layer_weights=[0.15, 0.2, 0.25, 0.3], hidden_layer_bias=0.35,
                       output_layer_weights=[0.4, 0.45, 0.5, 0.55], output_layer_bias=0.6)
    for i in range(ITERATIONS):
        nn.train([0.05, 0.1], targets)
        if i % args.every == 0 or i == ITERATIONS - 1:
            print(i, round(nn.calculate_total_error([[[0.05, 0.1], targets]]), 9))


if __name__ == "__main__":
    main()
