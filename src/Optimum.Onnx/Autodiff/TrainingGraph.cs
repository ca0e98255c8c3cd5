using Optimum.Onnx.Proto;

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
    /// differentiates the loss with respect to every trainable parameter not in <paramref name="frozen"/>.
    /// Frozen parameters stay graph inputs but get no <c>grad.</c> output, and no backward node that only they need is emitted.
    /// </summary>
    /// <param name="name">Graph name.</param>
    /// <param name="define">The model definition, called once with <c>training = true</c>.</param>
    /// <param name="frozen">Names of trainable parameters to freeze (none when null); a name that is not one is refused.</param>
    /// <param name="lossScale">
    /// Add the float32 scalar input <see cref="Optimum.Core.GraphInputs.LossScale"/> and differentiate loss × scale (dynamic
    /// loss scaling for float16 graphs): the <c>grad.</c> outputs are the gradients times the scale, <c>loss</c> is unscaled.
    /// </param>
    public static GraphBuilder BuildTraining(string name, Func<GraphBuilder, bool, ModelOutputs> define, IReadOnlyCollection<string>? frozen = null, bool lossScale = false)
    {
        var g = new GraphBuilder(name);
        var m = define(g, true);
        AddGradientOutputs(g, m.Loss, frozen, lossScale ? g.Input(Optimum.Core.GraphInputs.LossScale, DType.Float, Shape.Scalar) : null);
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

    /// <summary>
    /// Adds outputs <c>loss</c> and <c>grad.&lt;p&gt;</c> for every trainable parameter of the graph not in
    /// <paramref name="frozen"/>, in declaration order; with <paramref name="scale"/> (a float32 scalar) the gradients are
    /// those of loss × scale, and <c>loss</c> stays unscaled.
    /// </summary>
    public static IReadOnlyList<Value> AddGradientOutputs(GraphBuilder g, Value loss, IReadOnlyCollection<string>? frozen = null, Value? scale = null)
    {
        var ps = g.TrainableParameters;
        if (frozen is { Count: > 0 })
        {
            var names = ps.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
            if (frozen.FirstOrDefault(f => !names.Contains(f)) is { } stray)
                throw new GraphBuildException($"Cannot freeze '{stray}': it is not a trainable parameter of graph '{g.Name}'.");
            var set = frozen.ToHashSet(StringComparer.Ordinal);
            ps = ps.Where(p => !set.Contains(p.Name)).ToList();
        }
        if (ps.Count == 0) throw new GraphBuildException($"Graph '{g.Name}' has no parameters to differentiate.");
        if (scale is not null && (scale.Type != DType.Float || scale.Rank != 0 || loss.Type != DType.Float))
            throw new GraphBuildException($"Graph '{g.Name}': a loss scale must be a float32 scalar over a float32 loss, got {scale.Type.Name()}{scale.Shape} and {loss.Type.Name()}.");
        var grads = Autodiff.Gradients(scale is null ? loss : g.Mul(loss, scale), ps);
        g.Output(loss, "loss");
        return ps.Select((p, i) => g.Output(grads[i], GradPrefix + p.Name)).ToArray();
    }

    /// <summary>
    /// The training graph <paramref name="model"/> with <paramref name="frozen"/> parameters frozen: their <c>grad.</c>
    /// outputs removed, then every node, value_info and initializer no remaining output needs (the backward chain only
    /// they needed). They stay graph inputs. Works on any training graph of this project without its model definition,
    /// which is how the trainer freezes a model folder's committed training.onnx at run time. Returns a new model.
    /// </summary>
    public static ModelProto Freeze(ModelProto model, IReadOnlyCollection<string> frozen)
    {
        var m = model.Clone();
        var g = m.Graph ?? throw new GraphBuildException("Model has no graph.");
        var set = frozen.ToHashSet(StringComparer.Ordinal);
        var outputs = g.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        if (set.FirstOrDefault(f => !outputs.Contains(GradPrefix + f)) is { } stray)
            throw new GraphBuildException($"Cannot freeze '{stray}': graph '{g.Name}' has no output '{GradPrefix}{stray}' (not a trainable parameter).");
        var kept = g.Output.Where(o => !(o.Name.StartsWith(GradPrefix, StringComparison.Ordinal) && set.Contains(o.Name[GradPrefix.Length..]))).ToArray();
        if (!kept.Any(o => o.Name.StartsWith(GradPrefix, StringComparison.Ordinal)))
            throw new GraphBuildException($"Freezing {set.Count} parameter(s) of graph '{g.Name}' leaves no gradient output: nothing to train.");
        g.Output.Clear();
        g.Output.Add(kept);
        var needed = kept.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var nodes = new List<NodeProto>();
        for (int i = g.Node.Count - 1; i >= 0; i--)
        {
            var n = g.Node[i];
            if (!n.Output.Any(needed.Contains)) continue;
            nodes.Add(n);
            foreach (var x in n.Input) if (x != "") needed.Add(x);
            // Subgraphs (If, Loop, Scan) may read values of the outer graph by name.
            foreach (var a in n.Attribute) foreach (var sub in a.Graphs.Append(a.G)) if (sub is not null) AddReads(sub, needed);
        }
        nodes.Reverse();
        g.Node.Clear();
        g.Node.Add(nodes);
        var produced = nodes.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        var infos = g.ValueInfo.Where(v => produced.Contains(v.Name)).ToArray();
        g.ValueInfo.Clear();
        g.ValueInfo.Add(infos);
        var inits = g.Initializer.Where(t => needed.Contains(t.Name)).ToArray();
        g.Initializer.Clear();
        g.Initializer.Add(inits);
        return m;
    }

    /// <summary><see cref="Freeze(ModelProto, IReadOnlyCollection{string})"/> over the bytes of an ONNX file.</summary>
    public static byte[] Freeze(byte[] model, IReadOnlyCollection<string> frozen) =>
        Google.Protobuf.MessageExtensions.ToByteArray(Freeze(ModelProto.Parser.ParseFrom(model), frozen));

    private static void AddReads(GraphProto sub, HashSet<string> needed)
    {
        foreach (var n in sub.Node)
        {
            foreach (var x in n.Input) if (x != "") needed.Add(x);
            foreach (var a in n.Attribute) foreach (var s in a.Graphs.Append(a.G)) if (s is not null) AddReads(s, needed);
        }
    }
}
