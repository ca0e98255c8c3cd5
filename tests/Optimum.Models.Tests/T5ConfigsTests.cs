using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>T5 configs other than the fixture's: relu, untied/scaled heads, other depths — gradients against finite differences in double.</summary>
public sealed class T5ConfigsTests(ITestOutputHelper output)
{
    public static TheoryData<string> Configs() => ["relu-untied-3x2", "gated-gelu-tied-scaled-1x3"];

    private static T5Config Config(string name) => name == "relu-untied-3x2"
        ? new T5Config { VocabSize = 19, DModel = 8, DKv = 3, NumHeads = 2, DFf = 10, NumLayers = 3, NumDecoderLayers = 2, RelativeAttentionNumBuckets = 8, RelativeAttentionMaxDistance = 12, FeedForwardProj = "relu", TieWordEmbeddings = false, ScaleDecoderOutputs = false, DropoutRate = 0 }
        : new T5Config { VocabSize = 17, DModel = 8, DKv = 4, NumHeads = 2, DFf = 6, NumLayers = 1, NumDecoderLayers = 3, RelativeAttentionNumBuckets = 6, RelativeAttentionMaxDistance = 9, FeedForwardProj = "gated-gelu", TieWordEmbeddings = true, ScaleDecoderOutputs = true, DropoutRate = 0 };

    [Theory]
    [MemberData(nameof(Configs))]
    public void TrainingGraph_LossReadsTheVocabularyOnlyToNormaliseExponentiateAndScatter(string name)
    {
        var cfg = Config(name);
        var train = TrainingGraph.BuildTraining("t5", (g, t) => T5.DefineLm(g, t, cfg));
        // As GPT-2's: the head's products and views, LogSoftmax, the label pick, and exp(log p) with -1 scattered in place.
        Assert.Equal(["Exp", "LogSoftmax", "MatMul", "NegativeLogLikelihoodLoss", "Reshape", "ScatterElements", "Transpose"],
            GraphChecks.OpsReadingVocabWide(train, cfg.VocabSize));
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void TrainingGradients_MatchFiniteDifferences_InDouble(string name)
    {
        var cfg = Config(name);
        var train = TrainingGraph.BuildTraining("t5", (g, t) => T5.DefineLm(g, t, cfg, DType.Double));
        var eval = TrainingGraph.BuildEval("t5", (g, t) => T5.DefineLm(g, t, cfg, DType.Double));
        var ps = train.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
        Assert.Equal(!cfg.TieWordEmbeddings, ps.Any(p => p.Name == "lm_head.weight"));
        var rng = new Random(4);
        var w = ps.Select(p => Enumerable.Range(0, (int)p.Count).Select(_ => (p.Name.EndsWith("layer_norm.weight") ? 1 : 0) + 0.4 * Rand.Normal(rng)).ToArray()).ToArray();
        var feeds = ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor(w[x.i], x.p.Shape, DType.Double));
        // Two sources (one padded, and longer than the exact buckets reach) and labels with an ignored tail.
        feeds["input_ids"] = new HostTensor([3, 5, 7, 2, 9, 11, 4, 8, 6, 10, 12, 13, 14, 15, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0], [2, 12], DType.Int64);
        feeds["attention_mask"] = new HostTensor([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [2, 12], DType.Int64);
        feeds["labels"] = new HostTensor([4, 9, 2, 1, 5, 1, -100, -100], [2, 4], DType.Int64);
        using var trainModel = new OrtModel(train);
        using var evalModel = new OrtModel(eval);
        var analytic = trainModel.Run(feeds);
        var (maxAbs, n) = SampledGradCheck.Run(ps, w, analytic, () => evalModel.Run(feeds, ["loss"])["loss"][0], perTensor: 4, rng);
        output.WriteLine($"T5 {name}: {n} gradient elements, max |analytic - fd| = {maxAbs:E2}");
    }
}
