namespace Optimum.Models;

/// <summary>
/// What a model definition holds while it builds one graph: the builder <c>g</c>, its config <c>c</c>, the float
/// type <c>dt</c>, whether it is the training graph, and its parameters by HF name (created on first use, in order).
/// </summary>
public abstract class GraphModel<TConfig>(GraphBuilder g, TConfig c, DType dt, bool training)
{
    protected readonly GraphBuilder g = g;
    protected readonly TConfig c = c;
    protected readonly DType dt = dt;
    protected readonly bool training = training;
    private readonly Dictionary<string, Value> _params = [];

    /// <summary>The trainable parameter <paramref name="name"/> (the same value on every use).</summary>
    protected Value P(string name, params Dim[] shape) => Get(name, shape, buffer: false);

    /// <summary>The buffer <paramref name="name"/>: stored with the parameters, never stepped (e.g. BatchNorm statistics).</summary>
    protected Value B(string name, params Dim[] shape) => Get(name, shape, buffer: true);

    /// <summary>
    /// Hugging Face's language-model loss: cross-entropy of <paramref name="logits"/> (..., vocab) against
    /// <paramref name="labels"/> (...), labels -100 ignored, mean over the others. Written as ONNX defines
    /// SoftmaxCrossEntropyLoss, LogSoftmax then NegativeLogLikelihoodLoss: ONNX Runtime runs that LogSoftmax as one
    /// multi-threaded kernel, several times faster than the one inside its SoftmaxCrossEntropyLoss over a 50k
    /// vocabulary, and the two gradient rules together make the backward one exp(log p), scaled per row, with the
    /// labels' terms scattered into it in place.
    /// </summary>
    protected Value LmLoss(Value logits, Value labels, long vocab) =>
        g.NegativeLogLikelihoodLoss(g.LogSoftmax(g.Reshape(logits, -1, vocab), 1), g.Reshape(labels, -1), reduction: "mean", ignoreIndex: -100);

    private Value Get(string name, Dim[] shape, bool buffer)
    {
        if (!_params.TryGetValue(name, out var v))
            _params[name] = v = buffer ? g.Buffer(name, new Shape(shape), dt) : g.Parameter(name, new Shape(shape), dt);
        return v;
    }
}
