using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>
/// UNet configs other than unet-tiny's, so that the parity does not hold for the fixture alone: one to three levels,
/// attention first, last, everywhere or only in the mid block, one to three layers per block, 1, 2 and 3 input channels
/// with other output channels, 1 to 4 channels per group, one head (attention_head_dim null), downsample_padding 0,
/// flip_sin_to_cos false with freq_shift 1, and class-conditional. For each: every gradient against finite differences
/// of the loss, the eval and inference graphs' noise_pred against the training graph's, the shapes, and the
/// parameter count against diffusers' module sizes. ONNX Runtime has no double Conv, so the graphs run in float and
/// the gradient check uses directional derivatives (<see cref="SampledGradCheck.RunDirectionalFloat"/>).
/// </summary>
public sealed class UNetConfigsTests(ITestOutputHelper output)
{
    private const int Batch = 2;

    public static TheoryData<string> Configs() => ["1level-attn-onehead-in1-out3-sin-shift1", "2levels-attnfirst-pad0-classes-in3-out1", "3levels-attnlast-2groups-in2", "2levels-noattn-3layers-1chpergroup"];

    private static UNet2DConfig Config(string name) => name switch
    {
        "1level-attn-onehead-in1-out3-sin-shift1" => new UNet2DConfig
        {
            SampleSize = 4, InChannels = 1, OutChannels = 3, BlockOutChannels = [8], LayersPerBlock = 1,
            DownBlockTypes = ["AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D"], NormNumGroups = 4, AttentionHeadDim = null,
            FlipSinToCos = false, FreqShift = 1,
        },
        "2levels-attnfirst-pad0-classes-in3-out1" => new UNet2DConfig
        {
            SampleSize = 8, InChannels = 3, OutChannels = 1, BlockOutChannels = [8, 16], LayersPerBlock = 2,
            DownBlockTypes = ["AttnDownBlock2D", "DownBlock2D"], UpBlockTypes = ["UpBlock2D", "AttnUpBlock2D"], NormNumGroups = 4, AttentionHeadDim = 4,
            DownsamplePadding = 0, NumClassEmbeds = 3,
        },
        "3levels-attnlast-2groups-in2" => new UNet2DConfig
        {
            SampleSize = 8, InChannels = 2, OutChannels = 2, BlockOutChannels = [4, 8, 8], LayersPerBlock = 1,
            DownBlockTypes = ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
            NormNumGroups = 2, AttentionHeadDim = 4,
        },
        _ => new UNet2DConfig
        {
            SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8, 8], LayersPerBlock = 3,
            DownBlockTypes = ["DownBlock2D", "DownBlock2D"], UpBlockTypes = ["UpBlock2D", "UpBlock2D"], NormNumGroups = 8, AttentionHeadDim = 2,
        },
    };

    /// <summary>
    /// torch's initialisation with GroupNorm affine parameters moved off 1 and 0 (so their gradients are not a special
    /// case), and a batch: normal samples and targets, timesteps spread over [0, 1000), class labels.
    /// </summary>
    private static (ParameterInfo[] Ps, double[][] W, Dictionary<string, HostTensor> Feeds) Setup(UNet2DConfig c, GraphBuilder graph, Random rng)
    {
        var ps = graph.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
        var init = ModelKinds.Initialize(ps, c, 7);
        var w = ps.Select((p, i) => p.Name.Contains("norm", StringComparison.Ordinal)
            ? init[i].Select(v => v + 0.3 * Rand.Normal(rng)).ToArray()
            : init[i].Select(v => (double)v).ToArray()).ToArray();
        var feeds = ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor(w[x.i], x.p.Shape, DType.Float));
        int s = c.SampleSize;
        HostTensor Normal(int channels) => new(Enumerable.Range(0, Batch * channels * s * s).Select(_ => Rand.Normal(rng)).ToArray(), [Batch, channels, s, s], DType.Float);
        feeds["sample"] = Normal(c.InChannels);
        feeds["target"] = Normal(c.OutChannels);
        feeds["timestep"] = new HostTensor(Enumerable.Range(0, Batch).Select(_ => (double)rng.Next(1000)).ToArray(), [Batch], DType.Int64);
        if (c.NumClassEmbeds is { } n) feeds["class_labels"] = new HostTensor(Enumerable.Range(0, Batch).Select(b => (double)(b % n)).ToArray(), [Batch], DType.Int64);
        return (ps, w, feeds);
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void TrainingGradients_MatchFiniteDifferences_AndEveryGraphPredictsTheSameNoise(string name)
    {
        var c = Config(name);
        var train = new GraphBuilder("train");
        var m = UNet2D.Define(train, true, c);
        TrainingGraph.AddGradientOutputs(train, m.Loss);
        foreach (var (k, v) in m.Outputs!) train.Output(v, k);
        var eval = TrainingGraph.BuildEval("eval", (g, t) => UNet2D.Define(g, t, c));
        var denoiser = new GraphBuilder("denoiser");
        UNet2D.DefineDenoiser(denoiser, c);

        // (c) shapes: noise_pred is (batch, out, H, W) in every graph; one gradient per parameter, of its size.
        var expectedShape = Shape.Of("batch", c.OutChannels, c.SampleSize, c.SampleSize);
        Assert.Equal(expectedShape, m.Outputs!.Single(o => o.Key == "noise_pred").Value.Shape);
        Assert.Equal(expectedShape, denoiser.Outputs.Single().Shape);
        Assert.Equal(ExpectedParameterCount(c), train.Parameters.Sum(p => p.Shape.ToStatic().Aggregate(1L, (a, b) => a * b)));

        var rng = new Random(11);
        var (ps, w, feeds) = Setup(c, train, rng);
        using var trainModel = new OrtModel(train);
        using var evalModel = new OrtModel(eval);
        using var denoiserModel = new OrtModel(denoiser);
        var analytic = trainModel.Run(feeds);
        int outputs = Batch * c.OutChannels * c.SampleSize * c.SampleSize;
        Assert.Equal(outputs, analytic["noise_pred"].Length);
        Assert.All(ps, p => Assert.Equal(p.Count, analytic["grad." + p.Name].Length));

        // (b) eval and inference graphs against the training graph: same noise, same loss, and loss = MSE of that noise.
        var target = feeds["target"].Values;
        var denoiserFeeds = feeds.Where(kv => kv.Key != "target").ToDictionary(kv => kv.Key, kv => kv.Value);
        var evaluated = evalModel.Run(feeds);
        var (evalAbs, _) = Compare.Check("eval noise_pred", evaluated["noise_pred"], analytic["noise_pred"].Select(v => (float)v).ToArray(), 1e-6, 1e-5);
        var (inferAbs, _) = Compare.Check("inference noise_pred", denoiserModel.Run(denoiserFeeds)["noise_pred"], analytic["noise_pred"].Select(v => (float)v).ToArray(), 1e-6, 1e-5);
        double loss = analytic["loss"][0], mse = Mse(analytic["noise_pred"], target);
        Assert.True(Math.Abs(evaluated["loss"][0] - loss) <= 1e-6 * loss, $"eval loss {evaluated["loss"][0]:R} vs training loss {loss:R}");
        Assert.True(Math.Abs(mse - loss) <= 1e-5 * loss, $"training loss {loss:R} vs the MSE of its noise_pred {mse:R}");

        // (a) every gradient against central differences of the loss, recomputed in double from the inference graph's noise.
        double Loss() => Mse(denoiserModel.Run(denoiserFeeds, ["noise_pred"])["noise_pred"], target);
        var (maxErr, n) = SampledGradCheck.RunDirectionalFloat(ps, w, analytic, Loss, rng);
        output.WriteLine($"UNet {name}: {ps.Length} parameters ({ps.Sum(p => p.Count):N0} values), loss {loss:F5}; noise_pred eval/inference max_abs {evalAbs:E1}/{inferAbs:E1}; "
            + $"{n} directional derivatives, max |analytic - fd| / tolerance = {maxErr:F3}");
    }

    /// <summary>The reference configuration of ../shared/tools/torch-ref (Unet.cs, what bench unet runs) has 1,707,009 parameters.</summary>
    [Fact]
    public void TorchReferenceConfig_Has1707009Parameters()
    {
        var c = new UNet2DConfig
        {
            SampleSize = 32, InChannels = 1, OutChannels = 1, BlockOutChannels = [32, 64, 64], LayersPerBlock = 2, NormNumGroups = 8, AttentionHeadDim = 8,
            DownBlockTypes = ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        };
        var g = new GraphBuilder("denoiser");
        UNet2D.DefineDenoiser(g, c);
        long count = g.Parameters.Sum(p => p.Shape.ToStatic().Aggregate(1L, (a, b) => a * b));
        Assert.Equal(1_707_009, count);
        Assert.Equal(ExpectedParameterCount(c), count);
    }

    private static double Mse(double[] prediction, double[] target) => prediction.Zip(target, (p, t) => (p - t) * (p - t)).Sum() / target.Length;

    /// <summary>diffusers' UNet2DModel parameter count from its module sizes (Conv2d k×k: in·out·k² + out; Linear: in·out + out; GroupNorm: 2·C).</summary>
    private static long ExpectedParameterCount(UNet2DConfig c)
    {
        long t = c.TimeEmbedDim;
        long Conv(long i, long o, long k) => i * o * k * k + o;
        long Linear(long i, long o) => i * o + o;
        long Resnet(long i, long o) => 2 * i + Conv(i, o, 3) + Linear(t, o) + 2 * o + Conv(o, o, 3) + (i == o ? 0 : Conv(i, o, 1));
        long Attention(long ch) => 2 * ch + 4 * Linear(ch, ch);
        var chs = c.BlockOutChannels;
        long n = Linear(chs[0], t) + Linear(t, t) + (c.NumClassEmbeds ?? 0) * t + Conv(c.InChannels, chs[0], 3);
        long cur = chs[0];
        for (int i = 0; i < chs.Length; i++)
        {
            for (int j = 0; j < c.LayersPerBlock; j++)
            {
                n += Resnet(cur, chs[i]) + (c.DownBlockTypes[i] == "AttnDownBlock2D" ? Attention(chs[i]) : 0);
                cur = chs[i];
            }
            if (i < chs.Length - 1) n += Conv(cur, cur, 3);
        }
        n += 2 * Resnet(cur, cur) + Attention(cur);
        for (int i = 0; i < chs.Length; i++)
        {
            int level = chs.Length - 1 - i;
            long output = chs[level];
            for (int j = 0; j <= c.LayersPerBlock; j++)
            {
                // The skip of the last resnet of an up block comes from the level below's output (conv_in's for the top level).
                long skip = j < c.LayersPerBlock ? output : chs[Math.Max(level - 1, 0)];
                n += Resnet(cur + skip, output) + (c.UpBlockTypes[i] == "AttnUpBlock2D" ? Attention(output) : 0);
                cur = output;
            }
            if (level > 0) n += Conv(cur, cur, 3);
        }
        return n + 2 * cur + Conv(cur, c.OutChannels, 3);
    }
}
