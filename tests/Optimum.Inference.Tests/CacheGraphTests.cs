using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Inference.Tests;

/// <summary>
/// Cache edits as graphs (<see cref="SessionSettings.CacheEditsAsGraphs"/>: what a GPU runs, tested here on the CPU) against
/// the span copies: beam search's reorder, continuous batching's joins and leaves (GPT-2 and T5's self- and cross-attention
/// caches) give the same caches and logits, bit for bit, and so the same tokens.
/// </summary>
public sealed class CacheGraphTests : IClassFixture<CacheGraphTests.Fixture>
{
    /// <summary>gpt2-tiny and t5-tiny, each loaded twice: span copies, and cache edits as graphs.</summary>
    public sealed class Fixture : IDisposable
    {
        public readonly string Dir = Repo.TempDir();
        public readonly CausalLm Lm, LmGraphs;
        public readonly Seq2SeqLm T5, T5Graphs;

        public Fixture()
        {
            Assert.Empty(ModelKinds.Export(Repo.Fixture("gpt2-tiny"), Path.Combine(Dir, "gpt2")));
            Assert.Empty(ModelKinds.Export(Repo.Fixture("t5-tiny"), Path.Combine(Dir, "t5")));
            var graphs = new SessionSettings { CacheEditsAsGraphs = true };
            Lm = new CausalLm(Path.Combine(Dir, "gpt2"));
            LmGraphs = new CausalLm(Path.Combine(Dir, "gpt2"), settings: graphs);
            T5 = new Seq2SeqLm(Path.Combine(Dir, "t5"));
            T5Graphs = new Seq2SeqLm(Path.Combine(Dir, "t5"), settings: graphs);
        }

        public void Dispose()
        {
            Lm.Dispose();
            LmGraphs.Dispose();
            T5.Dispose();
            T5Graphs.Dispose();
            Directory.Delete(Dir, true);
        }
    }

    private readonly Fixture _f;
    public CacheGraphTests(Fixture f) => _f = f;

    private static void SameBits(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} values, expected {expected.Length}");
        int i = MemoryMarshal.AsBytes(expected).SequenceCompareTo(MemoryMarshal.AsBytes(actual)) == 0 ? -1 : FirstDifference(expected, actual);
        Assert.True(i < 0, $"{what}: value {i} is {(i < 0 ? 0 : actual[i])}, expected {(i < 0 ? 0 : expected[i])}");
    }

    private static int FirstDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        for (int i = 0; i < a.Length; i++) if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i])) return i;
        return -1;
    }

    [Fact]
    public void Settings_GraphPathOnlyWhenAskedOrOnCuda()
    {
        Assert.Null(_f.Lm.CacheOps);
        Assert.NotNull(_f.LmGraphs.CacheOps);
        Assert.Same(_f.LmGraphs.CacheOps, _f.LmGraphs.CacheOps);              // made once
        Assert.False(new SessionSettings().EditsCacheWithGraphs);
        Assert.True(new SessionSettings { Device = ExecutionDevice.Cuda(1) }.EditsCacheWithGraphs);
        Assert.Same(OrtMemoryInfo.DefaultInstance, new DevicePlacement(ExecutionDevice.Cpu).Resident);
        // CUDA's resident memory is the device allocator's on that GPU (a descriptor: no GPU is needed to make it); C# reads the host's.
        var cuda = new DevicePlacement(ExecutionDevice.Cuda(1));
        Assert.Equal(("Cuda", 1, OrtAllocatorType.DeviceAllocator, OrtMemType.Default),
            (cuda.Resident.Name, cuda.Resident.Id, cuda.Resident.GetAllocatorType(), cuda.Resident.GetMemoryType()));
        Assert.Same(cuda.Resident, new DevicePlacement(ExecutionDevice.Cuda(1)).Resident);
        Assert.Same(OrtMemoryInfo.DefaultInstance, cuda.Host);
        Assert.False(cuda.IsHost);
    }

    [Fact]
    public void ToResident_OnTheCpu_IsAViewOfTheArray()
    {
        var data = new float[] { 1, -2, 3.5f, 4, 5, 6 };
        OrtAllocator? allocator = null;
        using var v = new DevicePlacement(ExecutionDevice.Cpu).ToResident(_f.Lm.Session, data, [2, 3], ref allocator, null);
        Assert.Null(allocator);
        Assert.Equal(new long[] { 2, 3 }, v.GetTensorTypeAndShape().Shape);
        data[4] = 50;                                                                    // no copy: the value sees the array
        Assert.Equal(data, v.GetTensorDataAsSpan<float>().ToArray());
    }

    [Fact]
    public void Splice_ShiftsCutsAndZeroesAsTheClosedForm()
    {
        using var ops = new CacheOps(new SessionSettings { IntraOpThreads = 1 });
        const int B = 3, H = 2, T = 5, D = 2, L = 4;
        var x = Enumerable.Range(0, B * H * T * D).Select(i => i + 1f).ToArray();             // x[b,h,t,d] = 1 + flat index
        using var xv = OrtValue.CreateTensorValueFromMemory(x, [B, H, T, D]);
        using var acc0 = CacheOps.Empty(H, L, D);
        foreach (var shift in new[] { -3, -1, 0, 2, 4 })
        {
            int[] rows = [2, 0];
            int[] from = [0, 1], to = [L, 3];
            using var y = ops.Splice(acc0, xv, rows, shift, from, to);
            Assert.Equal(new long[] { 2, H, L, D }, y.GetTensorTypeAndShape().Shape);
            var got = y.GetTensorDataAsSpan<float>().ToArray();
            for (int i = 0; i < rows.Length; i++)
                for (int h = 0; h < H; h++)
                    for (int t = 0; t < L; t++)
                        for (int d = 0; d < D; d++)
                        {
                            int s = t - shift;
                            float want = t >= from[i] && t < to[i] && s >= 0 && s < T ? x[((rows[i] * H + h) * T + s) * D + d] : 0f;
                            Assert.True(want == got[((i * H + h) * L + t) * D + d], $"shift {shift}, row {i}, head {h}, t {t}, d {d}: {got[((i * H + h) * L + t) * D + d]}, expected {want}");
                        }
            // Appending to a non-empty cache keeps its rows first.
            using var twice = ops.Splice(y, xv, [1], shift, [0], [L]);
            Assert.Equal(new long[] { 3, H, L, D }, twice.GetTensorTypeAndShape().Shape);
            SameBits(got, twice.GetTensorDataAsSpan<float>()[..got.Length], $"shift {shift}: the accumulated rows");
        }
    }

    [Fact]
    public void BeamReorder_AsGraph_GivesTheSameLogitsAndBeams()
    {
        long[] prompt = [5, 61, 2, 40, 7];
        long gathers = CacheOps.Gathers;
        using var span = _f.Lm.Start();
        using var graph = _f.LmGraphs.Start();
        long[] ids = [.. prompt, .. prompt, .. prompt];
        long[] pos = [.. Enumerable.Range(0, 3).SelectMany(_ => Enumerable.Range(0, prompt.Length).Select(i => (long)i))];
        var mask = Enumerable.Repeat(1L, 3 * prompt.Length).ToArray();
        SameBits(span.Step(ids, pos, mask, 3), graph.Step(ids, pos, mask, 3), "prefill logits");
        int[][] orders = [[2, 0, 0], [1, 2, 0], [0, 0, 0], [2, 1, 1]];
        for (int s = 0; s < orders.Length; s++)
        {
            span.Reorder(orders[s]);
            graph.Reorder(orders[s]);
            long[] next = [11 + s, 300 + s, 7 * s];
            long at = prompt.Length + s;
            var m = Enumerable.Repeat(1L, 3 * (span.Length + 1)).ToArray();
            var a = span.Step(next, [at, at, at], m, 3).ToArray();
            SameBits(a, graph.Step(next, [at, at, at], m, 3), $"logits after reorder {s}");
        }
        var o = new GenerationOptions { MaxNewTokens = 12, NumBeams = 4 };
        Assert.Equal(Generator.Generate(_f.Lm, [[5, 61, 2]], o)[0].Tokens, Generator.Generate(_f.LmGraphs, [[5, 61, 2]], o)[0].Tokens);
        Assert.True(CacheOps.Gathers > gathers, "the graph path never ran a Gather");         // not the span copies twice
    }

    /// <summary>One KvBatch step of one token per row; each row's mask covers its last <paramref name="live"/>[i] + 1 positions.</summary>
    private static float[] Step(KvBatch b, int[] live, int tick)
    {
        int n = live.Length, total = b.Length + 1;
        var ids = Enumerable.Range(0, n).Select(i => (long)((tick * 37 + i * 11) % 400 + 3)).ToArray();
        var pos = live.Select(l => (long)l).ToArray();
        var mask = new long[n * total];
        for (int i = 0; i < n; i++) mask.AsSpan(i * total + total - live[i] - 1, live[i] + 1).Fill(1);
        for (int i = 0; i < n; i++) live[i]++;
        return b.Step(ids, pos, mask, n, 1).ToArray();
    }

    private static KvBatch Prefill(CausalLm lm, long[] prompt, out float[] logits)
    {
        var b = new KvBatch(lm);
        logits = b.Step(prompt, [.. Enumerable.Range(0, prompt.Length).Select(i => (long)i)], [.. Enumerable.Repeat(1L, prompt.Length)], 1, prompt.Length).ToArray();
        return b;
    }

    private void SameCaches(KvBatch span, KvBatch graph, string when)
    {
        Assert.Equal((span.Batch, span.Length), (graph.Batch, graph.Length));
        for (int k = 0; k < 2 * _f.Lm.Layers; k++) SameBits(span.Past(k), graph.Past(k), $"{when}: cache tensor {k}");
    }

    [Fact]
    public void ContinuousBatching_JoinsAndLeaves_AsGraphs_GiveTheSameCachesAndLogits()
    {
        long[][] prompts = [[5, 61, 2], [40, 7, 7, 93, 11, 0, 3], [100], [9, 9, 9, 9]];
        long splices = CacheOps.Splices;
        using var s = new KvBatch(_f.Lm);
        using var g = new KvBatch(_f.LmGraphs);
        var joinS = new KvBatch[prompts.Length];
        var joinG = new KvBatch[prompts.Length];
        try
        {
            for (int p = 0; p < prompts.Length; p++)
            {
                joinS[p] = Prefill(_f.Lm, prompts[p], out var a);
                joinG[p] = Prefill(_f.LmGraphs, prompts[p], out var b);
                SameBits(a, b, $"prefill {p}");
            }
            // (source: -1 = the batch, else a joining prompt; row; cached), then steps of the rebuilt batch.
            (int Source, int Row, int Cached)[][] plans =
            [
                [(0, 0, 3)],                                   // the first row joins
                [(-1, 0, 5), (1, 0, 7)],                       // a longer prompt joins: the batch's row is shifted right
                [(2, 0, 1), (-1, 1, 9)],                       // the first row leaves, a 1-token prompt joins in front
                [(-1, 1, 3), (3, 0, 4), (-1, 0, 0)],           // the longest row leaves: the cache is cut on the left; a row with nothing cached
                [(-1, 2, 2), (-1, 0, 4)],                      // rows swap places, the middle one leaves
            ];
            var live = Array.Empty<int>();
            for (int r = 0; r < plans.Length; r++)
            {
                var plan = plans[r];
                s.Rebuild([.. plan.Select(x => (x.Source < 0 ? s : joinS[x.Source], x.Row, x.Cached))]);
                g.Rebuild([.. plan.Select(x => (x.Source < 0 ? g : joinG[x.Source], x.Row, x.Cached))]);
                SameCaches(s, g, $"rebuild {r}");
                Assert.Equal(plan.Max(x => x.Cached), s.Length);
                live = [.. plan.Select(x => x.Cached)];
                for (int t = 0; t < 2; t++)
                {
                    var liveG = live.ToArray();
                    SameBits(Step(s, live, 10 * r + t), Step(g, liveG, 10 * r + t), $"rebuild {r}, step {t}");
                }
                SameCaches(s, g, $"after the steps of rebuild {r}");
            }
            s.Rebuild([]);
            g.Rebuild([]);
            Assert.Equal((0, 0), (g.Batch, g.Length));
            Assert.True(CacheOps.Splices > splices, "the graph path never ran a Splice");         // not the span copies twice
        }
        finally
        {
            foreach (var b in joinS.Concat(joinG)) b?.Dispose();
        }
    }

    [Fact]
    public async Task ContinuousBatching_OverTheScheduler_AsGraphs_EqualsEachPromptAlone()
    {
        int[][] prompts = [[5, 61, 2], [40, 7, 7, 93, 11, 0, 3], [100], [9, 9, 9, 9]];
        int[] max = [12, 5, 20, 3];
        using var scheduler = new BatchScheduler(_f.LmGraphs, 2);
        var results = await Task.WhenAll(prompts.Select((p, i) => Task.Run(() => scheduler.Generate(p, new GenerationOptions { MaxNewTokens = max[i] }))));
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(Generator.Generate(_f.Lm, [prompts[i]], new GenerationOptions { MaxNewTokens = max[i] })[0].Tokens, results[i].Tokens);
    }

    [Fact]
    public void T5_BeamSearchAndBatchRebuilds_AsGraphs_GiveTheSameLogitsAndTokens()
    {
        var beams = new GenerationOptions { MaxNewTokens = 10, NumBeams = 3 };
        long gathers = CacheOps.Gathers, splices = CacheOps.Splices;
        int[] source = [40, 7, 7, 93, 11, 300, 3];
        Assert.Equal(_f.T5.Generate([source], beams)[0].Tokens, _f.T5Graphs.Generate([source], beams)[0].Tokens);

        int[][] sources = [[5, 61, 2], [512, 13, 250, 4, 4, 8, 8, 9], [100]];
        using var s = new Seq2SeqBatch(_f.T5);
        using var g = new Seq2SeqBatch(_f.T5Graphs);
        // (joining source or -1, row of the batch, cached positions)
        (int Join, int Row, int Cached)[][] plans =
        [
            [(0, 0, 0)],
            [(-1, 0, 2), (1, 0, 0)],                       // a longer source joins: cross rows padded to 8
            [(2, 0, 0), (-1, 1, 2)],                       // the first row leaves, a 1-token source joins in front
            [(-1, 0, 2)],                                  // the longest source leaves: cross rows cut to 1
        ];
        int tick = 0;
        foreach (var plan in plans)
        {
            IDisposable? Admit(Seq2SeqBatch b, int join) => join < 0 ? null : b.Admit(sources[join], out _);
            s.Rebuild([.. plan.Select(x => (Admit(s, x.Join), x.Row, x.Cached))]);
            g.Rebuild([.. plan.Select(x => (Admit(g, x.Join), x.Row, x.Cached))]);
            var live = plan.Select(x => x.Cached).ToArray();
            for (int t = 0; t < 2; t++, tick++)
            {
                int n = live.Length, total = s.Length + 1;
                var ids = Enumerable.Range(0, n).Select(i => (long)(tick == 0 || live[i] == 0 ? 0 : (tick * 31 + i * 7) % 500 + 2)).ToArray();
                var mask = new long[n * total];
                for (int i = 0; i < n; i++) mask.AsSpan(i * total + total - live[i] - 1, live[i] + 1).Fill(1);
                SameBits(s.Step(ids, new long[n], mask, n), g.Step(ids, new long[n], mask, n), $"T5 step {tick}");
                for (int i = 0; i < n; i++) live[i]++;
            }
        }
        Assert.True(CacheOps.Gathers > gathers && CacheOps.Splices > splices, "the graph path never ran");
    }
}
