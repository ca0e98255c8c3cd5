namespace Optimum.Onnx;

/// <summary>What a model definition returns: the loss and, for the eval graph, other named outputs.</summary>
/// <param name="Loss">Floating-point scalar.</param>
/// <param name="Outputs">Extra outputs of the eval graph (e.g. logits), in order.</param>
/// <param name="Updates">New values of buffers (by buffer name) that the training graph outputs as <c>update.&lt;name&gt;</c>, e.g. BatchNorm running statistics.</param>
public sealed record ModelOutputs(Value Loss, IReadOnlyList<KeyValuePair<string, Value>>? Outputs = null, IReadOnlyList<KeyValuePair<string, Value>>? Updates = null);

/// <summary>
/// Emits the two graphs a trainer needs from one model definition: a training graph (parameters
/// are graph inputs; outputs <c>loss</c> then <c>grad.&lt;param&gt;</c> in parameter order) and an
/// eval graph (loss and chosen outputs, no gradients).
/// </summary>
public static class TrainingGraph
{
    /// <summary>Prefix of gradient output names.</summary>
    public const string GradPrefix = "grad.";
    /// <summary>Prefix of buffer-update output names.</summary>
    public const string UpdatePrefix = "update.";

    /// <summary>
    /// Builds the training graph: runs <paramref name="define"/> with <c>training = true</c>, then
    /// differentiates the loss with respect to every parameter.
    /// </summary>
    public static GraphBuilder BuildTraining(string name, Func<GraphBuilder, bool, ModelOutputs> define)
    {
        var g = new GraphBuilder(name);
        var m = define(g, true);
        AddGradientOutputs(g, m.Loss);
        foreach (var (buffer, v) in m.Updates ?? []) g.Output(v, UpdatePrefix + buffer);
        return g;
    }

    /// <summary>Builds the eval graph: <paramref name="define"/> with <c>training = false</c>; outputs loss and the extra outputs.</summary>
    public static GraphBuilder BuildEval(string name, Func<GraphBuilder, bool, ModelOutputs> define)
    {
        var g = new GraphBuilder(name);
        var m = define(g, false);
        g.Output(m.Loss, "loss");
        foreach (var (k, v) in m.Outputs ?? []) g.Output(v, k);
        return g;
    }

    /// <summary>Adds outputs <c>loss</c> and <c>grad.&lt;p&gt;</c> for every trainable parameter of the graph, in declaration order.</summary>
    public static IReadOnlyList<Value> AddGradientOutputs(GraphBuilder g, Value loss)
    {
        var ps = g.TrainableParameters;
        if (ps.Count == 0) throw new GraphBuildException($"Graph '{g.Name}' has no parameters to differentiate.");
        var grads = Autodiff.Gradients(loss, ps);
        g.Output(loss, "loss");
        return ps.Select((p, i) => g.Output(grads[i], GradPrefix + p.Name)).ToArray();
    }
}
