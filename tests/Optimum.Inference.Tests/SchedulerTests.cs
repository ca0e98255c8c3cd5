using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Inference.Diffusion;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Inference.Tests;

/// <summary>
/// The noise schedules and the DDIM/DDPM steps against closed forms and hand-computed values. The small schedule used by
/// the step checks is linear 0.1..0.5 over 5 steps: betas 0.1 … 0.5, ᾱ = 0.9, 0.72, 0.504, 0.3024, 0.1512.
/// </summary>
public sealed class SchedulerTests(ITestOutputHelper output)
{
    private const double Tol = 1e-6;                                                      // float32 arithmetic on values of order 1
    private static readonly SchedulerConfig Five = new() { NumTrainTimesteps = 5, BetaStart = 0.1, BetaEnd = 0.5, ClipSample = false };

    private static void Near(double expected, double actual, double tol = Tol, string what = "") =>
        Assert.True(Math.Abs(expected - actual) <= tol, $"{what} {actual} vs {expected} (|Δ| {Math.Abs(expected - actual):E2} > {tol})");

    [Fact]
    public void ScaledLinear_IsTheSquareOfALinspaceOfRoots()
    {
        var s = NoiseSchedule.ScaledLinear(1000, 0.00085, 0.012);
        double r0 = Math.Sqrt(0.00085), r1 = Math.Sqrt(0.012), worst = 0;
        for (int i = 0; i < 1000; i++)
        {
            double r = r0 + i * (r1 - r0) / 999, rel = Math.Abs(s.Betas[i] - r * r) / (r * r);
            worst = Math.Max(worst, rel);
        }
        output.WriteLine($"scaled_linear: betas[0] {s.Betas[0]:E6}, betas[999] {s.Betas[999]:E6}, max rel |Δ| vs (√b0 + i·Δ)² {worst:E2}");
        Assert.True(worst <= 1e-6, $"max rel {worst:E2}");
        Near(0.00085, s.Betas[0], 1e-10);
        Near(0.012, s.Betas[999], 1e-9);
        Assert.Equal((float)Math.Sqrt(0.00085) * (float)Math.Sqrt(0.00085), s.Betas[0]);   // squared in float32, as torch's ** 2
    }

    [Fact]
    public void SquaredCosCapV2_AlphasCumprodFollowsTheCosine_AndTheLastBetaIsCapped()
    {
        var s = NoiseSchedule.SquaredCosCapV2(1000);
        static double F(double u) => Math.Pow(Math.Cos((u + 0.008) / 1.008 * Math.PI / 2), 2);
        // Π (1 − β_i) telescopes to ᾱ((t + 1)/T) / ᾱ(0) while no beta is capped (all but the last).
        double worst = 0;
        for (int t = 0; t < 999; t++)
        {
            double expected = F((t + 1) / 1000.0) / F(0);
            worst = Math.Max(worst, Math.Abs(s.AlphasCumprod[t] - expected) / expected);
        }
        output.WriteLine($"squaredcos_cap_v2: betas[0] {s.Betas[0]:E6}, betas[998] {s.Betas[998]:F6}, betas[999] {s.Betas[999]}; ᾱ_t max rel |Δ| vs f((t+1)/T)/f(0) over t < 999: {worst:E2}");
        Assert.True(worst <= 1e-4, $"max rel {worst:E2}");                               // float32 betas, 999 factors
        Assert.Equal((float)(1 - F(0.001) / F(0)), s.Betas[0]);
        Assert.Equal(0.999f, s.Betas[999]);
        Assert.True(s.Betas.Take(999).All(b => b < 0.999f));
    }

    [Fact]
    public void SchedulerConfig_DefaultsRoundTripAndRefusalsNameTheKey()
    {
        var dir = Repo.TempDir();
        try
        {
            var d = SchedulerConfig.Load(dir);                                              // no file: DDPMScheduler's defaults
            Assert.Equal((1000, 1e-4, 0.02, "linear", true, 1.0, true, 0), (d.NumTrainTimesteps, d.BetaStart, d.BetaEnd, d.BetaSchedule, d.ClipSample, d.ClipSampleRange, d.SetAlphaToOne, d.StepsOffset));
            Assert.Equal(NoiseSchedule.Linear().AlphasCumprod, d.Build().AlphasCumprod);

            File.WriteAllText(Path.Combine(dir, SchedulerConfig.FileName), """
                {"_class_name": "DDIMScheduler", "_diffusers_version": "0.30.0", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                 "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1, "trained_betas": null, "thresholding": false}
                """);
            var c = SchedulerConfig.Load(dir);
            Assert.Equal(("DDIMScheduler", "scaled_linear", false, false, 1), (c.ClassName, c.BetaSchedule, c.ClipSample, c.SetAlphaToOne, c.StepsOffset));
            Assert.Equal(NoiseSchedule.ScaledLinear(1000, 0.00085, 0.012).Betas, c.Build().Betas);
            c.Save(dir);
            var again = SchedulerConfig.Load(dir);
            Assert.Equal(c with { Source = null }, again with { Source = null });
            Assert.Equal("0.30.0", again.Source!["_diffusers_version"]!.GetValue<string>());   // unknown keys are kept
            Assert.False(new SchedulerConfig().ToJson().ContainsKey("set_alpha_to_one"));      // DDPMScheduler does not take it
            Assert.Contains(Directory.GetFiles(dir), f => f.EndsWith(SchedulerConfig.FileName, StringComparison.Ordinal));
            Assert.Single(Directory.GetFiles(dir));                                           // no temporary left beside it

            string Refused(string json) => Assert.Throws<InvalidDataException>(() => SchedulerConfig.FromJson(HfConfig.Parse(json, "s.json"))).Message;
            Assert.Contains("s.json: prediction_type=\"v_prediction\" is not supported", Refused("""{"prediction_type": "v_prediction"}"""));
            Assert.Contains("timestep_spacing=\"trailing\"", Refused("""{"timestep_spacing": "trailing"}"""));
            Assert.Contains("variance_type=\"fixed_large\"", Refused("""{"variance_type": "fixed_large"}"""));
            Assert.Contains("beta_schedule=\"sigmoid\"", Refused("""{"beta_schedule": "sigmoid"}"""));
            Assert.Contains("thresholding=true", Refused("""{"thresholding": true}"""));
            Assert.Contains("trained_betas=[0.1,0.2]", Refused("""{"trained_betas": [0.1, 0.2]}"""));
            Assert.Contains("'num_train_timesteps' is \"many\"", Refused("""{"num_train_timesteps": "many"}"""));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LeadingTimesteps_WithStepsOffset()
    {
        Assert.Equal([900L, 800, 700, 600, 500, 400, 300, 200, 100, 0], new DdimScheduler(new SchedulerConfig(), 10).Timesteps);
        Assert.Equal([901L, 801, 701, 601, 501, 401, 301, 201, 101, 1], new DdimScheduler(new SchedulerConfig { StepsOffset = 1 }, 10).Timesteps);
        Assert.Equal([666L, 333, 0], new DdpmScheduler(new SchedulerConfig(), 3).Timesteps);
        Assert.Contains("past the schedule's last (999)", Assert.Throws<ArgumentException>(() => new DdimScheduler(new SchedulerConfig { StepsOffset = 1 }, 1000)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new DdpmScheduler(new SchedulerConfig(), 1001));
    }

    [Fact]
    public void DdpmStep_EqualsHandComputedPosterior()
    {
        var s = new DdpmScheduler(Five, 5);                                               // timesteps 4, 3, 2, 1, 0
        Assert.Equal([4L, 3, 2, 1, 0], s.Timesteps);
        // Step index 2 (t = 2, prev 1): ᾱ_t 0.504, ᾱ_prev 0.72, α_t 0.7, β_t 0.3; x 0.3, ε 0.2, z 0.5.
        var (c0, ct) = s.MeanCoefficients(2);
        Near(0.5132226637644295, c0, what: "x0 coefficient √ᾱ_prev·β_t/(1 − ᾱ_t)");
        Near(0.47230807949504267, ct, what: "x_t coefficient √α_t·(1 − ᾱ_prev)/(1 − ᾱ_t)");
        Near(0.1693548387096774, s.Variance(2), what: "β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t");
        Near(0.46250567074327387, StepOne(s, 2, 0.3f, 0.2f, 0.5f), what: "x_prev = μ + √β̃·z");
        // Two of the five steps (timesteps 2, 0): t = 2 jumps to 0 with the step's own beta 1 − ᾱ_2/ᾱ_0.
        var skip = new DdpmScheduler(Five, 2);
        Assert.Equal([2L, 0], skip.Timesteps);
        Near(0.08870967741935483, skip.Variance(0), what: "skipping β̃");
        Near(0.38283910846625224, StepOne(skip, 0, 0.3f, 0.2f, 0.5f), what: "skipping x_prev");
        // t = 0: no noise, ᾱ_prev = 1, so μ = x̂₀ (clipped when clip_sample is set).
        Assert.False(skip.AddsNoise(1));
        Near((0.3 - Math.Sqrt(0.1) * 0.2) / Math.Sqrt(0.9), StepOne(skip, 1, 0.3f, 0.2f, float.NaN), what: "last step = x̂₀");
        var clipped = new DdpmScheduler(Five with { ClipSample = true, ClipSampleRange = 0.25 }, 2);
        Near(0.25, StepOne(clipped, 1, 3f, 0.2f, float.NaN), what: "clipped x̂₀");
    }

    [Fact]
    public void DdimStep_EqualsHandComputedValues_ForEtaClipAndFinalAlpha()
    {
        // eta 0.5 at t = 2 → 1: variance (1 − 0.72)/(1 − 0.504)·(1 − 0.504/0.72) = 0.16935, σ = 0.5·√variance.
        var s = new DdimScheduler(Five, 5, eta: 0.5);
        Near(0.1693548387096774, s.Variance(2), what: "DDIM variance");
        Near(0.20576372293827538, s.Sigma(2), what: "σ_t");
        Near(0.39059810831736974, StepOne(s, 2, 0.3f, 0.2f, 0.5f), what: "x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε + σ·z");
        // With eta 1, DDIM's σ² is DDPM's posterior variance.
        Assert.Equal(new DdpmScheduler(Five, 5).Variance(2), new DdimScheduler(Five, 5, eta: 1).Sigma(2) * new DdimScheduler(Five, 5, eta: 1).Sigma(2), 6);
        // After the last step ᾱ_prev is 1 (set_alpha_to_one) or ᾱ_0 = 0.9; steps_offset 1 makes the last timestep 1 → prev −1.
        var one = new DdimScheduler(Five with { StepsOffset = 1 }, 2);                     // timesteps 3, 1
        var zero = new DdimScheduler(Five with { StepsOffset = 1, SetAlphaToOne = false }, 2);
        Assert.Equal([3L, 1], one.Timesteps);
        double x0 = (0.3 - Math.Sqrt(1 - 0.72) * 0.2) / Math.Sqrt(0.72);
        Near(x0, StepOne(one, 1, 0.3f, 0.2f, float.NaN), what: "final ᾱ 1");
        Near(Math.Sqrt(0.9) * x0 + Math.Sqrt(0.1) * 0.2, StepOne(zero, 1, 0.3f, 0.2f, float.NaN), what: "final ᾱ_0");
        // clip_sample_range clamps x̂₀.
        var clip = new DdimScheduler(Five with { ClipSample = true, ClipSampleRange = 0.5 }, 5);
        Near(Math.Sqrt(0.72) * 0.5 + Math.Sqrt(0.28) * 0.2, StepOne(clip, 2, 5f, 0.2f, float.NaN), what: "clipped");
    }

    [Fact]
    public void DdimEtaOne_OneStepHasVarianceSigmaSquared_OnManySamples()
    {
        var s = new DdimScheduler(new SchedulerConfig(), 10, eta: 1);                    // t = 500 → 400 of the default schedule
        const int N = 200_000;
        var x = Enumerable.Repeat(0.4f, N).ToArray();
        var eps = Enumerable.Repeat(-0.3f, N).ToArray();
        var noise = Optimum.Hub.HfWeights.Normal(new Random(5), N, 1.0);
        var result = new float[N];
        s.Step(4, x, eps, noise, result);
        var deterministic = new float[1];
        new DdimScheduler(new SchedulerConfig(), 10, eta: 1).Step(4, [0.4f], [-0.3f], [0f], deterministic);
        double mean = result.Average(v => (double)v), variance = result.Sum(v => (v - mean) * (v - mean)) / (N - 1), sigma2 = (double)s.Sigma(4) * s.Sigma(4);
        output.WriteLine($"DDIM eta 1, t 500→400: σ² {sigma2:F6}, sample variance {variance:F6} (rel {Math.Abs(variance / sigma2 - 1):E2}); mean {mean:F5} vs {deterministic[0]:F5}");
        // Standard error of a variance estimate is σ²·√(2/N) ≈ 0.32% here: 4 standard errors.
        Assert.True(Math.Abs(variance / sigma2 - 1) <= 4 * Math.Sqrt(2.0 / N), $"variance {variance} vs σ² {sigma2}");
        Assert.True(Math.Abs(mean - deterministic[0]) <= 4 * Math.Sqrt(sigma2 / N), $"mean {mean} vs {deterministic[0]}");
        double x0 = (0.4 - Math.Sqrt(1 - s.AlphaProd(500)) * -0.3) / Math.Sqrt(s.AlphaProd(500));
        Assert.True(x0 > 1);                                                               // ᾱ_500 ≈ 0.078: x̂₀ ≈ 2.5 is clipped to 1
        Near(Math.Sqrt(s.AlphaProd(400)) * 1 + Math.Sqrt(1 - s.AlphaProd(400) - sigma2) * -0.3, deterministic[0], 1e-5, "mean closed form");
    }

    [Fact]
    public void Step_RefusesMissingNoiseAndMismatchedLengths()
    {
        var s = new DdpmScheduler(Five, 5);
        Assert.Contains("needs 2 noise values, got 0", Assert.Throws<ArgumentException>(() => s.Step(0, new float[2], new float[2], [], new float[2])).Message);
        Assert.Contains("2 sample values, 3 predicted noise values", Assert.Throws<ArgumentException>(() => s.Step(0, new float[2], new float[3], new float[2], new float[2])).Message);
        Assert.Contains("eta 0.5 is a DDIM setting", Assert.Throws<ArgumentException>(() => DiffusionScheduler.Create(SamplerKind.Ddpm, Five, 5, 0.5)).Message);
    }

    private static float StepOne(DiffusionScheduler s, int index, float x, float eps, float z)
    {
        var r = new float[1];
        s.Step(index, [x], [eps], s.AddsNoise(index) ? [z] : [], r);
        return r[0];
    }
}
