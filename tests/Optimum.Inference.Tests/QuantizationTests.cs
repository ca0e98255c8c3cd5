using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference.Quantization;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Inference.Tests;

/// <summary>Weight-only quantization: the block math against the float weights, the rewritten graphs against float32, the folder's refusals.</summary>
public sealed class QuantizationTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Theory]
    [InlineData(4, 16, false)]
    [InlineData(4, 32, true)]
    [InlineData(4, 128, true)]
    [InlineData(8, 32, false)]
    [InlineData(8, 64, true)]
    public void BlockQuantizer_DequantizedWithinHalfAStep(int bits, int block, bool zeroPoints)
    {
        const int n = 7, k = 100;                                 // K not a multiple of the block: the last block is padded
        var rng = new Random(bits * 1000 + block);
        var w = Enumerable.Range(0, n * k).Select(i => (float)(rng.NextDouble() * 2 - 0.7) * (1 + i % 5)).ToArray();
        for (int i = 0; i < k; i++) w[3 * k + i] = 0;              // an all-zero row: scale 0, decoded exactly
        for (int i = 0; i < k; i++) w[4 * k + i] = 0.25f + i;      // all positive: the zero point sits at the range's end
        var q = BlockQuantizer.Quantize(w, n, k, bits, block, zeroPoints);
        Assert.Equal(n * ((k + block - 1) / block) * block * bits / 8, q.Packed.Length);
        var d = q.Dequantize();
        int levels = (1 << bits) - 1;
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k; c++)
            {
                float step = q.Scale(r, c / block), x = w[r * k + c];
                Assert.True(Math.Abs(d[r * k + c] - x) <= step / 2 * (1 + 1e-5) + 1e-6, $"({r}, {c}): {x} decoded as {d[r * k + c]}, step {step}");
                Assert.InRange(q.Code(r, c), 0, levels);
            }
        for (int c = 0; c < k; c++) Assert.Equal(0f, d[3 * k + c]);
        // The step is what the scheme promises: max|w| / (2^(bits-1) - 1) symmetric, (max - min) / (2^bits - 1) with 0 in the range.
        var row4 = w.AsSpan(4 * k, Math.Min(block, k));
        float expected = zeroPoints ? row4[^1] / levels : row4[^1] / ((1 << (bits - 1)) - 1);
        Assert.Equal(expected, q.Scale(4, 0), 6);
    }

    [Fact]
    public void BlockQuantizer_PacksLowNibbleFirst_AsMatMulNBitsReadsIt()
    {
        // One row, one block of 16: w = (i - 8) * 0.5, symmetric int4: scale = 4 / 7 ... choose max 3.5 -> scale 0.5, code = i - 8 + 8 = i.
        var w = Enumerable.Range(0, 16).Select(i => (i - 7) * 0.5f).ToArray();   // -3.5 .. 4.0: max |w| = 4 -> scale 4/7
        w[15] = 3.5f;                                                             // max |w| = 3.5 -> scale 0.5, codes i + 1 (i < 15)
        var q = BlockQuantizer.Quantize(w, 1, 16, 4, 16, zeroPoints: false);
        Assert.Equal(0.5f, q.Scales[0]);
        Assert.Equal((byte)(1 | 2 << 4), q.Packed[0]);
        Assert.Equal((byte)(15 | 15 << 4), q.Packed[7]);
        Assert.Null(q.ZeroPoints);
        var z = BlockQuantizer.Quantize([.. Enumerable.Range(0, 48).Select(i => i < 16 ? 1f : i < 32 ? -1f : (float)(i % 2))], 1, 48, 4, 16, zeroPoints: true);
        // Blocks: all 1 (range [0, 1], zp 0), all -1 (range [-1, 0], zp 15), 0/1 (zp 0): packed two per byte, low first.
        Assert.Equal([(byte)(0 | 15 << 4), (byte)0], z.ZeroPoints!);
    }

    [Fact]
    public void ColumnQuantizer_DequantizedWithinHalfAStep()
    {
        const int n = 5, k = 9;
        var rng = new Random(3);
        var wt = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var q = ColumnQuantizer.Quantize(wt, n, k);
        var d = q.Dequantize();                                     // [K, N]
        for (int j = 0; j < n; j++)
            for (int i = 0; i < k; i++)
                Assert.True(Math.Abs(d[i * n + j] - wt[j * k + i]) <= q.Scales[j] / 2 * (1 + 1e-5), $"({i}, {j})");
    }

    [Fact]
    public void ColumnQuantizer_ReduceRange_CodesWithin63_DequantizedWithinHalfAStep()
    {
        const int n = 6, k = 11;
        var rng = new Random(4);
        var wt = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var q = ColumnQuantizer.Quantize(wt, n, k, reduceRange: true);
        Assert.All(q.Codes, c => Assert.InRange(c, (sbyte)-63, (sbyte)63));
        var d = q.Dequantize();                                     // [K, N]
        for (int j = 0; j < n; j++)
        {
            float amax = wt.Skip(j * k).Take(k).Max(MathF.Abs);
            Assert.Equal(amax / 63, q.Scales[j], 1e-7f);
            Assert.Contains(q.Codes.Where((_, i) => i % n == j), c => Math.Abs(c) == 63);   // the largest weight takes the end of the range
            for (int i = 0; i < k; i++)
                Assert.True(Math.Abs(d[i * n + j] - wt[j * k + i]) <= q.Scales[j] / 2 * (1 + 1e-5), $"({i}, {j})");
        }
    }

    [Fact]
    public void Quantize_ReduceRange_IsRecordedInConfig_AndRefusedOutsideInt8Dynamic()
    {
        var src = Repo.Path("models", "gpt2-mini");
        var w = ModelKinds.InitialWeights(src, 0);
        var dst = Path.Combine(_dir, "rr");
        ModelQuantizer.Quantize(src, w, dst, new QuantizeOptions { Weights = WeightPrecision.Int8, ReduceRange = true });
        var q = ModelFolder.ReadConfig(dst).Json["optimum"]!["quantization"]!;
        Assert.True(q["reduce_range"]!.GetValue<bool>());
        Assert.Contains("--reduce-range", Assert.Throws<ArgumentException>(() => ModelQuantizer.Quantize(src, w, Path.Combine(_dir, "o"),
            new QuantizeOptions { Weights = WeightPrecision.Int4, ReduceRange = true })).Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "o")));
    }

    /// <summary>The output never merges into the model folder or an old folder: refused, or with Overwrite replaced whole.</summary>
    [Fact]
    public void Quantize_OutputFolder_IsRefusedInsideTheModel_AndReplacedWholeOnlyWithOverwrite()
    {
        var mini = Repo.Path("models", "gpt2-mini");
        var src = Path.Combine(_dir, "src");
        Directory.CreateDirectory(src);
        foreach (var f in Directory.GetFiles(mini)) File.Copy(f, Path.Combine(src, Path.GetFileName(f)));
        var before = Directory.GetFiles(src).Select(Path.GetFileName).Order().ToArray();
        var w = ModelKinds.InitialWeights(src, 0);
        var o = new QuantizeOptions { Weights = WeightPrecision.Int4 };
        foreach (var bad in new[] { src, src + "/", Path.Combine(src, "q"), Path.Combine(src, "..", "src") })
            Assert.Contains("model folder", Assert.Throws<ArgumentException>(() => ModelQuantizer.Quantize(src, w, bad, o with { Overwrite = true })).Message);
        Assert.Contains("contains the model folder", Assert.Throws<ArgumentException>(() => ModelQuantizer.Quantize(src, w, _dir, o with { Overwrite = true })).Message);
        Assert.Equal(before, Directory.GetFiles(src).Select(Path.GetFileName).Order().ToArray());
        Assert.Empty(Directory.GetDirectories(src));

        var dst = Path.Combine(_dir, "dst");
        Directory.CreateDirectory(Path.Combine(dst, "sub"));
        File.WriteAllText(Path.Combine(dst, "stale.onnx"), "old");
        var e = Assert.Throws<IOException>(() => ModelQuantizer.Quantize(src, w, dst, o));
        Assert.Contains($"'{dst}' exists and is not empty", e.Message);
        Assert.Contains("--overwrite", e.Message);
        Assert.True(File.Exists(Path.Combine(dst, "stale.onnx")));
        ModelQuantizer.Quantize(src, w, dst, o with { Overwrite = true });
        Assert.False(File.Exists(Path.Combine(dst, "stale.onnx")));
        Assert.False(Directory.Exists(Path.Combine(dst, "sub")));
        Assert.Equal(WeightPrecision.Int4, ModelQuantizer.PrecisionOf(dst));
        Assert.Equal(2, Directory.GetFileSystemEntries(_dir).Length);      // src and dst: no temporary or old folder left beside them
        var empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        ModelQuantizer.Quantize(src, w, empty, o);                          // an existing empty folder needs no --overwrite
        Assert.Equal(WeightPrecision.Int4, ModelQuantizer.PrecisionOf(empty));
    }

    /// <summary>A tiny GPT-2 whose matrices are exact multiples of the block scales the quantizer will find: the graphs must agree to float rounding.</summary>
    [Theory]
    [InlineData("int4", 16, true)]
    [InlineData("int4", 32, false)]
    [InlineData("int8", 16, true)]
    [InlineData("int8", 32, false)]
    public void QuantizedGraph_EqualsFloat32_WhenWeightsAreExactlyRepresentable(string precision, int block, bool zeroPoints)
    {
        var cfg = new Gpt2Config { VocabSize = 96, NPositions = 16, NEmbd = 64, NLayer = 2, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0 };
        var src = Path.Combine(_dir, "f32");
        ModelKinds.Write(src, cfg);
        var ps = ModelFolder.ReadParameters(src);
        var o = new QuantizeOptions { Weights = ModelQuantizer.Parse(precision), BlockSize = block, ZeroPoints = zeroPoints, AccuracyLevel = 0, Int8Operator = Int8Operator.MatMulNBits };
        var rng = new Random(5);
        var w = ModelKinds.Initialize(ps, cfg, 0);
        for (int i = 0; i < ps.Count; i++)
        {
            if (ps[i].Shape.Length != 2 || ps[i].Name.EndsWith("wpe.weight", StringComparison.Ordinal)) continue;
            bool head = ps[i].Name.EndsWith("wte.weight", StringComparison.Ordinal);     // multiplied transposed: already [N, K]
            int rows = (int)ps[i].Shape[0], cols = (int)ps[i].Shape[1];
            int n = head ? rows : cols, k = head ? cols : rows;
            var wt = Exact(n, k, o.Bits, block, zeroPoints, rng);
            w[i] = head ? wt : GraphQuantizer.Transpose(wt, n, k);   // [N, K] -> [K, N] (the transpose is its own inverse with the sizes swapped)
        }
        HfWeights.Save(Path.Combine(src, ModelFolder.WeightsFile), ps, w);
        var dst = Path.Combine(_dir, precision);
        ModelQuantizer.Quantize(src, dst, o);

        using var f = new CausalLm(src);
        using var q = new CausalLm(dst);
        long[] ids = [3, 17, 95, 40, 40, 2, 61];
        var a = Logits(f, ids);
        var b = Logits(q, ids);
        double scale = a.Max(Math.Abs);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4 * scale + 1e-5, $"logit {i}: float32 {a[i]}, {precision} {b[i]}");
        Assert.Equal(ModelQuantizer.Parse(precision), ModelQuantizer.PrecisionOf(dst));
    }

    private static float[] Logits(CausalLm lm, long[] ids)
    {
        using var s = lm.Start();
        return s.Step(ids, [.. Enumerable.Range(0, ids.Length).Select(p => (long)p)], [.. Enumerable.Repeat(1L, ids.Length)], 1).ToArray();
    }

    /// <summary>
    /// Wᵀ [N, K] with every block a power-of-two scale times integer codes that reach the ends of the code range, so that
    /// the quantizer finds exactly that scale and those codes (a zero-padded last block would not change the range).
    /// </summary>
    private static float[] Exact(int n, int k, int bits, int block, bool zeroPoints, Random rng)
    {
        var wt = new float[n * k];
        int levels = (1 << bits) - 1, half = (1 << (bits - 1)) - 1;
        for (int r = 0; r < n; r++)
            for (int b = 0; b * block < k; b++)
            {
                float scale = MathF.Pow(2, -rng.Next(5, 9));
                int zp = rng.Next(0, levels + 1);
                int start = b * block, end = Math.Min(k, start + block);
                for (int c = start; c < end; c++)
                    wt[r * k + c] = zeroPoints ? (rng.Next(0, levels + 1) - zp) * scale : rng.Next(-half, half + 1) * scale;
                // The ends of the range: codes 0 and 2^bits - 1 (zero points), or ±(2^(bits-1) - 1) (symmetric).
                wt[r * k + start] = zeroPoints ? -zp * scale : half * scale;
                if (end - start > 1) wt[r * k + start + 1] = zeroPoints ? (levels - zp) * scale : -half * scale;
            }
        return wt;
    }

    [Theory]
    [InlineData("int4", Int8Operator.MatMulNBits)]
    [InlineData("int8", Int8Operator.MatMulNBits)]
    [InlineData("int8", Int8Operator.DynamicQuantizeMatMul)]
    public void QuantizedGpt2Mini_LoadsAndGenerates_CloseToFloat32(string precision, Int8Operator op)
    {
        var src = Repo.Path("models", "gpt2-mini");
        var w = ModelKinds.InitialWeights(src, 0);
        var dst = Path.Combine(_dir, precision);
        ModelQuantizer.Quantize(src, w, dst, new QuantizeOptions { Weights = ModelQuantizer.Parse(precision), Int8Operator = op });
        Assert.False(File.Exists(Path.Combine(dst, ModelFolder.TrainingFile)));
        // A random initialisation (std 0.02, logits rms ~0.2): int4 measured 0.14 of rms here, int8 under 0.02.
        // Only the float parameters stay in the safetensors: wte (the embedding Gather reads it), wpe, LayerNorms, biases.
        var kept = ModelFolder.ReadParameters(dst).Select(p => p.Name).ToArray();
        Assert.Contains("transformer.wte.weight", kept);
        Assert.DoesNotContain("transformer.h.0.attn.c_attn.weight", kept);
        Assert.DoesNotContain("transformer.h.3.mlp.c_proj.weight", kept);
        Assert.Equal(ModelFolder.ReadParameters(src).Count - 4 * 4, kept.Length);

        using var model = ModelKinds.Load(dst);
        using var f = new CausalLm(src, w);
        var lm = model.Generator!.CausalModel!;
        long[] ids = [464, 1049, 318, 257];
        var a = Logits(f, ids);
        var b = Logits(lm, ids);
        double rms = Math.Sqrt(a.Average(x => (double)x * x)), err = Math.Sqrt(a.Zip(b, (x, y) => (double)(x - y) * (x - y)).Average());
        Assert.True(err < (precision == "int4" ? 0.2 : 0.02) * rms, $"{precision}: logits differ by rms {err} against rms {rms}");
        var c = model.Generator.Complete("Call me Ishmael.", new GenerationOptions { MaxNewTokens = 12, EosTokenId = -1 });
        Assert.Equal(12, c.CompletionTokens);
    }

    [Fact]
    public void Quantize_RefusesBadInput_NamingIt()
    {
        var src = Repo.Path("models", "gpt2-mini");
        var missing = Path.Combine(_dir, "nope");
        Assert.Contains(missing, Assert.Throws<DirectoryNotFoundException>(() => ModelQuantizer.Quantize(missing, Path.Combine(_dir, "o"), new QuantizeOptions())).Message);
        // models/gpt2-mini has graphs and config but no weights.
        Assert.Contains("model.safetensors", Assert.Throws<FileNotFoundException>(() => ModelQuantizer.Quantize(src, Path.Combine(_dir, "o"), new QuantizeOptions())).Message);
        var w = ModelKinds.InitialWeights(src, 0);
        foreach (var bs in new[] { 8, 24, 0, -32 })
            Assert.Contains("power of two", Assert.Throws<ArgumentOutOfRangeException>(() => ModelQuantizer.Quantize(src, w, Path.Combine(_dir, "o"), new QuantizeOptions { BlockSize = bs })).Message);
        Assert.Contains("int8 or int4", Assert.Throws<ArgumentException>(() => ModelQuantizer.Quantize(src, w, Path.Combine(_dir, "o"), new QuantizeOptions { Weights = WeightPrecision.Fp32 })).Message);
        Assert.Contains("'int3'", Assert.Throws<ArgumentException>(() => ModelQuantizer.Parse("int3", "--weights")).Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "o")));
        var q = Path.Combine(_dir, "q");
        ModelQuantizer.Quantize(src, w, q, new QuantizeOptions());
        var again = Assert.Throws<InvalidDataException>(() => ModelQuantizer.Quantize(q, Path.Combine(_dir, "o"), new QuantizeOptions()));
        Assert.Contains("already quantized (int4)", again.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "o")));
    }

    [Fact]
    public void Perplexity_OfAFixedDistribution_IsTheClosedForm()
    {
        double[] p = [0.5, 0.3, 0.1, 0.06, 0.04];
        using var lm = BeamSearchByHandTests.FixedDistribution(_dir, p);                   // every position predicts p whatever the context
        int[] tokens = [0, 1, 2, 3, 4, 0, 0, 1, 4, 2, 2, 3, 1, 0, 1, 1, 3, 2, 0, 4, 4];   // 21: windows of 6 -> 6, 6, 6, 3
        var r = LmQuality.Perplexity(lm, tokens, window: 6, batch: 2);
        var scored = Enumerable.Range(0, tokens.Length).Where(i => i % 6 != 0).Select(i => tokens[i]).ToArray();
        Assert.Equal(scored.Length, r.Tokens);
        Assert.Equal(scored.Average(t => -Math.Log(p[t])), r.MeanNll, 5);
    }
}
