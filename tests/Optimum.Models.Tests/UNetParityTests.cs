using Optimum.Core;
using Optimum.Hub;
using Optimum.Core.Diffusion;
using Optimum.Inference.Diffusion;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>../shared/fixtures/ref/unet-tiny (plain PyTorch after diffusers; its README gives the tolerances).</summary>
internal static class UnetTiny
{
    public static readonly string Dir = Path.GetFullPath(Path.Combine(Repo.Fixture("."), "..", "ref", "unet-tiny"));
    public static readonly IReadOnlyDictionary<string, SafeTensor> Expected = SafeTensorsFile.ReadAll(Path.Combine(Dir, "expected.safetensors"));
    public static UNet2DConfig Config => UNet2DConfig.FromHf(HfConfig.Load(Path.Combine(Dir, "config.json")));

    /// <summary>The fixture's weights for the parameters of <paramref name="g"/>, as feeds by name.</summary>
    public static (ParameterInfo[] Parameters, Dictionary<string, HostTensor> Feeds) Weights(GraphBuilder g)
    {
        var ps = g.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
        var w = HfWeights.Load(Path.Combine(Dir, "model.safetensors"), ps, out var unused);
        if (unused.Count > 0) throw new Xunit.Sdk.XunitException($"fixture tensors the graph does not use: {string.Join(", ", unused)}");
        return (ps, ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor(w[x.i].Select(v => (double)v).ToArray(), x.p.Shape, DType.Float)));
    }
}

/// <summary>The UNet against unet-tiny: predicted noise, MSE loss, all 144 gradients, and a 10-step DDIM trajectory.</summary>
public sealed class UNetParityTests(ITestOutputHelper output)
{

    [Fact]
    public void TrainingGraph_MatchesNoiseLossAndEveryGradient()
    {
        var g = new GraphBuilder("train");
        var m = UNet2D.Define(g, true, UnetTiny.Config);
        TrainingGraph.AddGradientOutputs(g, m.Loss);
        foreach (var (k, v) in m.Outputs!) g.Output(v, k);
        var (ps, feeds) = UnetTiny.Weights(g);
        var e = UnetTiny.Expected;
        HostTensor F(string name) => new(e[name].ToFloats().Select(v => (double)v).ToArray(), e[name].Shape, DType.Float);
        feeds["sample"] = F("noisy_sample");
        feeds["target"] = F("noise");
        feeds["timestep"] = new HostTensor(e["timesteps"].ToInt64s().Select(v => (double)v).ToArray(), e["timesteps"].Shape, DType.Int64);
        using var ort = new OrtModel(g);
        var r = ort.Run(feeds);

        var (sampleAbs, _) = Compare.Check("noise_pred", r["noise_pred"], e["sample"].ToFloats(), 1e-4, 0);
        double loss = r["loss"][0], lossRef = e["loss"].ToFloats()[0];
        Assert.True(Math.Abs(loss - lossRef) <= 1e-5 * Math.Abs(lossRef), $"loss {loss} vs {lossRef}");
        double gAbs = 0, gRel = 0;
        foreach (var p in ps)
        {
            var (a, rel) = Compare.Check("grad." + p.Name, r["grad." + p.Name], e["grad." + p.Name].ToFloats(), 1e-4, 1e-3);
            (gAbs, gRel) = (Math.Max(gAbs, a), Math.Max(gRel, rel));
        }
        Assert.Equal(144, ps.Length);
        Assert.Equal(e.Keys.Count(k => k.StartsWith("grad.", StringComparison.Ordinal)), ps.Length);
        output.WriteLine($"PARITY unet-tiny: sample max_abs={sampleAbs:E2}; loss {loss:F7} vs {lossRef:F7}; {ps.Length} gradients max_abs={gAbs:E2} max_rel={gRel:E2}");
    }

    [Fact]
    public void TenDdimSteps_FromTheFixturesNoise_MatchItsSample()
    {
        var cfg = UnetTiny.Config;
        var g = new GraphBuilder("denoiser");
        UNet2D.DefineDenoiser(g, cfg);
        var (_, feeds) = UnetTiny.Weights(g);
        var e = UnetTiny.Expected;
        using var ort = new OrtModel(g);
        float[] Predict(float[] x, long t)
        {
            feeds["sample"] = new HostTensor(x.Select(v => (double)v).ToArray(), [1, cfg.InChannels, cfg.SampleSize, cfg.SampleSize], DType.Float);
            feeds["timestep"] = new HostTensor([t], [1], DType.Int64);
            return ort.Run(feeds)["noise_pred"].Select(v => (float)v).ToArray();
        }
        // DDIMScheduler's defaults over DDPMScheduler's schedule (linear, 1000 steps): clip_sample, set_alpha_to_one, eta 0.
        var scheduler = new DdimScheduler(new SchedulerConfig(), 10);
        Assert.Equal(e["ddim.timesteps"].ToInt64s(), scheduler.Timesteps);
        var sample = e["ddim.x_T"].ToFloats();
        for (int k = 0; k < scheduler.Timesteps.Count; k++)
        {
            var next = new float[sample.Length];
            scheduler.Step(k, sample, Predict(sample, scheduler.Timesteps[k]), default, next);
            sample = next;
        }
        var (maxAbs, _) = Compare.Check("ddim.sample", sample.Select(v => (double)v).ToArray(), e["ddim.sample"].ToFloats(), 1e-3, 0);
        output.WriteLine($"PARITY unet-tiny DDIM 10 steps: max_abs={maxAbs:E2}");
    }
}
