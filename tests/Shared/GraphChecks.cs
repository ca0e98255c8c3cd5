using Optimum.Onnx;

namespace Optimum.Tests;

/// <summary>Checks on the structure of emitted graphs: what ONNX Runtime will actually run.</summary>
public static class GraphChecks
{
    /// <summary>The nodes <see cref="ModelWriter"/> writes (those an output depends on), in graph order.</summary>
    public static IReadOnlyList<Node> LiveNodes(GraphBuilder g)
    {
        var written = ModelWriter.ToProto(g).Graph.Node.Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
        return g.Nodes.Where(n => written.Contains(n.Name)).ToList();
    }

    /// <summary>
    /// Op types of the written nodes that read the data of a tensor whose last dim is <paramref name="vocab"/> (logits,
    /// log-probabilities and their gradients in a language model), sorted: each is a pass over (tokens, vocab).
    /// </summary>
    public static IReadOnlyList<string> OpsReadingVocabWide(GraphBuilder g, long vocab) =>
        LiveNodes(g).Where(n => n.OpType != "Shape" && n.Inputs.Any(x => x is { Rank: > 0 } && x.Shape[^1] == Dim.Of(vocab)))
            .Select(n => n.OpType).Distinct().Order(StringComparer.Ordinal).ToList();
}
