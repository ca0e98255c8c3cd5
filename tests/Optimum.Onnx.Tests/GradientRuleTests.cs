using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Onnx.Tests;

/// <summary>Every gradient rule against central finite differences, run through ONNX Runtime.</summary>
public sealed class GradientRuleTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases()
    {
        var d = new TheoryData<string>();
        foreach (var c in GradientRuleCases.All) d.Add(c.Label);
        return d;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Rule_MatchesCentralFiniteDifferences(string label)
    {
        var c = GradientRuleCases.All.Single(x => x.Label == label);
        var r = GradCheck.Run(c);
        var (eps, atol, rtol) = GradCheck.Tolerance(c.Type);
        output.WriteLine($"GRADCHECK\t{c.Op}\t{c.Label}\t{c.Type.Name()}\tmax_abs={r.MaxAbsError:E2}\tmax_rel={r.MaxRelError:E2}\tn={r.Checked}\teps={eps}");
        Assert.True(r.Checked > 0, $"{label}: nothing was checked");
        Assert.True(r.WorstRatio <= 1, $"{label}: max |analytic - fd| = {r.MaxAbsError:E3} exceeds {atol} + {rtol}*|fd| (ratio {r.WorstRatio:F2})");
    }

    [Fact]
    public void LogSoftmaxPickedByNll_BackwardOnlyExponentiatesAndScattersOverTheVocabulary()
    {
        // A language model's loss: besides the forward, the (tokens, vocab) tensors are read only to take exp(log p) and
        // scatter -1 at the labels in place; the per-row scale goes on the head's (tokens, width) operands. No one-hot,
        // no sum, difference or scaling over the vocabulary.
        const long vocab = 50;
        var g = new GraphBuilder("lm-loss");
        var logits = g.MatMul(g.Parameter("h", Shape.Of("batch", "seq", 8)), g.Transpose(g.Parameter("w", Shape.Of(vocab, 8))));   // (B, T, vocab)
        var labels = g.Input("labels", DType.Int64, Shape.Of("batch", "seq"));
        // Shifted as GPT-2 shifts them, the labels' length is no longer known to be seq.
        var shifted = g.Concat(1, g.Slice(labels, [1], [long.MaxValue], [1]), g.Slice(labels, [0], [1], [1]));
        var loss = g.NegativeLogLikelihoodLoss(g.LogSoftmax(g.Reshape(logits, -1, vocab), 1), g.Reshape(shifted, -1), ignoreIndex: -100);
        TrainingGraph.AddGradientOutputs(g, loss);
        // Besides, the head's three products (MatMul), the Reshape view, the Transpose of the transposed weight for dh
        // (which ONNX Runtime cancels) and that of dWᵀ (k, vocab) into the weight's layout.
        Assert.Equal(["Exp", "LogSoftmax", "MatMul", "NegativeLogLikelihoodLoss", "Reshape", "ScatterElements", "Transpose"],
            GraphChecks.OpsReadingVocabWide(g, vocab));
    }

    [Fact]
    public void EveryRuleInTheTable_HasAFiniteDifferenceCase()
    {
        var covered = GradientRuleCases.All.Select(c => c.Op).ToHashSet();
        var missing = GradientRules.Table.Keys.Where(k => !covered.Contains(k)).ToArray();
        Assert.True(missing.Length == 0, "Rules without a finite-difference case: " + string.Join(", ", missing));
        var unknown = covered.Where(k => !GradientRules.Table.ContainsKey(k)).ToArray();
        Assert.True(unknown.Length == 0, "Cases for ops without a rule: " + string.Join(", ", unknown));
    }

    [Fact]
    public void EveryCase_ExercisesTheRuleItNames()
    {
        foreach (var c in GradientRuleCases.All)
        {
            var data = c.Inputs.Select(i => i.Values ?? new double[i.Dims.Aggregate(1L, (a, b) => a * b)]).ToArray();
            var g = GradCheck.Graph(c, data, withGradients: false);
            Assert.True(g.Nodes.Any(n => n.OpType == c.Op), $"Case '{c.Label}' has no {c.Op} node.");
        }
    }
}
