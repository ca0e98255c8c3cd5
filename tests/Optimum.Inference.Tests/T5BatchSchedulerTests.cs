using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Inference.Tests;

/// <summary>
/// Continuous batching of T5: sources of different lengths are encoded as they join, their cross-attention inputs padded
/// to the batch's longest source and their decoder caches to its longest target; each request still gets exactly what
/// <see cref="Seq2SeqLm.Generate"/> gives it alone (greedy and seeded sampling), with its own stop conditions.
/// </summary>
public sealed class T5BatchSchedulerTests : IClassFixture<T5BatchSchedulerTests.Fixture>
{
    /// <summary>The transformers t5-tiny (2+2 layers, relative buckets up to distance 32) exported with the current graphs.</summary>
    public sealed class Fixture : IDisposable
    {
        public readonly string Dir = Repo.TempDir();
        public readonly Seq2SeqLm Lm;

        public Fixture()
        {
            Assert.Empty(ModelKinds.Export(Repo.Fixture("t5-tiny"), Dir));
            Lm = new Seq2SeqLm(Dir);
        }

        public void Dispose()
        {
            Lm.Dispose();
            Directory.Delete(Dir, true);
        }
    }

    private readonly Fixture _f;
    public T5BatchSchedulerTests(Fixture f) => _f = f;

    // Sources of 1 to 23 tokens and max_tokens up to 40 (past the relative bias's exact buckets), so rows join and leave
    // at different steps and both paddings vary. EOS (1) is left out of the sources.
    private static readonly int[][] Sources = [[5, 61, 2], [40, 7, 7, 93, 11, 300, 3], [100], [9, 9, 9, 9],
        [.. Enumerable.Range(2, 23).Select(i => i * 17 % 590 + 2)], [77, 3], [512, 13, 250, 4, 4]];
    private static readonly int[] MaxTokens = [12, 5, 40, 1, 9, 25, 17];

    private GenerationResult Alone(int[] source, GenerationOptions o) => _f.Lm.Generate([source], o)[0];

    private static Task<GenerationResult[]> Concurrently(BatchScheduler s, Func<int, GenerationOptions> options, int staggerMs) =>
        Task.WhenAll(Sources.Select((p, i) => Task.Run(async () =>
        {
            await Task.Delay(i * staggerMs);
            return s.Generate(p, options(i));
        })));

    [Fact]
    public void Decoder_TakesTheSelfAttentionMask() => Assert.True(_f.Lm.MasksDecoder);

    [Theory]
    [InlineData(2, 0)]          // more requests than slots: later ones wait for a row to finish
    [InlineData(4, 3)]          // staggered arrivals join the running batch
    [InlineData(8, 0)]
    public async Task Greedy_ConcurrentRequestsOfDifferentLengths_EqualEachSourceAlone(int slots, int staggerMs)
    {
        using var s = new BatchScheduler(_f.Lm, slots);
        GenerationOptions Options(int i) => new() { MaxNewTokens = MaxTokens[i], EosTokenId = i % 2 == 0 ? null : -1 };   // some rows run to max_tokens
        // A running request the others join at its third token.
        int[] anchorSource = [8, 8, 30, 2];
        var anchorOptions = new GenerationOptions { MaxNewTokens = 45, EosTokenId = -1 };
        var anchor = await BatchAnchor.Start(s, anchorSource, anchorOptions, holdAt: 3, joiners: Sources.Length);
        var batched = await Concurrently(s, Options, staggerMs);
        Assert.Equal(Alone(anchorSource, anchorOptions).Tokens, (await anchor).Tokens);
        for (int i = 0; i < Sources.Length; i++)
        {
            var alone = Alone(Sources[i], Options(i));
            Assert.Equal(alone.Tokens, batched[i].Tokens);
            Assert.Equal(alone.FinishReason, batched[i].FinishReason);
        }
        var (steps, rows) = s.Stats;
        Assert.True(rows > steps, $"{rows} rows in {steps} decode steps: the requests never shared a step.");
    }

    [Fact]
    public async Task SeededSampling_IsPerRequest_WhateverElseIsInTheBatch()
    {
        using var s = new BatchScheduler(_f.Lm, 4);
        GenerationOptions Options(int i) => new() { MaxNewTokens = MaxTokens[i], Temperature = 1.3, TopK = 50, Seed = 11 * i + 1, RepetitionPenalty = i % 2 == 0 ? 1 : 1.2 };
        var first = await Concurrently(s, Options, 1);
        var second = await Concurrently(s, Options, 0);
        for (int i = 0; i < Sources.Length; i++)
        {
            var alone = Alone(Sources[i], Options(i)).Tokens;
            Assert.Equal(alone, first[i].Tokens);
            Assert.Equal(alone, second[i].Tokens);
        }
    }

    [Fact]
    public async Task StopAndCancel_EndOnlyTheirOwnRow()
    {
        using var s = new BatchScheduler(_f.Lm, 4);
        var o = new GenerationOptions { MaxNewTokens = 20, EosTokenId = -1 };
        using var cancel = new CancellationTokenSource();
        var stopped = Task.Run(() => s.Generate(Sources[0], o, (_, tokens) => tokens.Count < 3));
        var cancelled = Task.Run(() => s.Generate(Sources[1], o, (_, tokens) => { if (tokens.Count == 4) cancel.Cancel(); return true; }, cancel.Token));
        var full = Task.Run(() => s.Generate(Sources[4], o));
        var (st, ca, fu) = (await stopped, await cancelled, await full);
        Assert.Equal(FinishReason.Stop, st.FinishReason);
        Assert.Equal(Alone(Sources[0], o).Tokens.Take(3), st.Tokens);
        Assert.Equal(FinishReason.Cancelled, ca.FinishReason);
        Assert.Equal(Alone(Sources[1], o).Tokens.Take(4), ca.Tokens);
        Assert.Equal(Alone(Sources[4], o).Tokens, fu.Tokens);
    }

    [Fact]
    public void TooLongSourceOrMaxTokens_AreRefusedAsAlone()
    {
        using var s = new BatchScheduler(_f.Lm, 2);
        Assert.Throws<ArgumentException>(() => s.Generate([], new GenerationOptions()));
        Assert.Throws<ArgumentException>(() => s.Generate([.. Enumerable.Repeat(5, _f.Lm.MaxPositions + 1)], new GenerationOptions()));
        Assert.Throws<ArgumentException>(() => s.Generate([5], new GenerationOptions { MaxNewTokens = _f.Lm.MaxPositions }));
    }

    [Fact]
    public async Task TextGenerator_OverTheScheduler_CompletesAsAlone_WithStopStrings()
    {
        var dir = Repo.TempDir();
        try
        {
            var tok = SymbolTokenizer.Build([("cat", "K AE T"), ("dog", "D AO G"), ("bird", "B ER D")]);
            ModelKinds.WritePreset(dir, new T5Config
            {
                VocabSize = tok.VocabSize, DModel = 16, DKv = 4, NumHeads = 2, DFf = 32, NumLayers = 1, NumDecoderLayers = 2, RelativeAttentionNumBuckets = 8,
                RelativeAttentionMaxDistance = 16, MaxLength = 48, DropoutRate = 0,
            }, seed: 3);
            tok.Save(dir);
            using var loaded = ModelKinds.Load(dir);
            var alone = loaded.Generator!;
            using var s = new BatchScheduler(alone.Seq2SeqModel!, 3);
            var batched = alone.With(s.Generate);
            string[] prompts = ["cat", "dogbird", "a", "birdcatdogcat", "god"];
            GenerationOptions Options(int i) => new() { MaxNewTokens = 6 + 7 * i, Temperature = i % 2, Seed = i };
            string[] stop = ["G ", "ER"];
            var got = await Task.WhenAll(prompts.Select((p, i) => Task.Run(() => batched.Complete(p, Options(i), stop))));
            for (int i = 0; i < prompts.Length; i++) Assert.Equal(alone.Complete(prompts[i], Options(i), stop), got[i]);
        }
        finally { Directory.Delete(dir, true); }
    }
}
