using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Optimum.Core;

namespace Optimum.Inference.Tests;

/// <summary>
/// Continuous batching: requests that join and leave a shared batch at different steps get exactly what they get alone
/// (greedy and seeded sampling), with their own stop conditions; through <see cref="TextGenerator"/> too.
/// </summary>
public sealed class BatchSchedulerTests : IClassFixture<GenerationTests.Fixture>
{
    private readonly GenerationTests.Fixture _f;
    public BatchSchedulerTests(GenerationTests.Fixture f) => _f = f;

    // Different prompt lengths and max_tokens, so rows join and leave at different steps and the padding varies.
    private static readonly int[][] Prompts = [[5, 61, 2], [40, 7, 7, 93, 11, 0, 3], [100], [9, 9, 9, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [77, 3]];
    private static readonly int[] MaxTokens = [12, 5, 20, 1, 9, 15];

    private GenerationResult Alone(int[] prompt, GenerationOptions o) => Generator.Generate(_f.Lm, [prompt], o)[0];

    /// <summary>Starts every request on its own thread, the i-th after i·<paramref name="staggerMs"/> ms.</summary>
    private static Task<GenerationResult[]> Concurrently(BatchScheduler s, Func<int, GenerationOptions> options, int staggerMs)
    {
        var tasks = Prompts.Select((p, i) => Task.Run(async () =>
        {
            await Task.Delay(i * staggerMs);
            return s.Generate(p, options(i));
        })).ToArray();
        return Task.WhenAll(tasks);
    }

    [Theory]
    [InlineData(2, 0)]          // more requests than slots: later ones wait for a row to finish
    [InlineData(4, 3)]          // staggered arrivals join the running batch
    [InlineData(8, 0)]
    public async Task Greedy_ConcurrentRequestsOfDifferentLengths_EqualEachPromptAlone(int slots, int staggerMs)
    {
        using var s = new BatchScheduler(_f.Lm, slots);
        GenerationOptions Options(int i) => new() { MaxNewTokens = MaxTokens[i] };
        // A running request the others join at its first token.
        var anchorPrompt = Prompts[0];
        var anchorOptions = new GenerationOptions { MaxNewTokens = 30 };
        var anchor = await BatchAnchor.Start(s, anchorPrompt, anchorOptions, holdAt: 1, joiners: Prompts.Length);
        var batched = await Concurrently(s, Options, staggerMs);
        Assert.Equal(Alone(anchorPrompt, anchorOptions).Tokens, (await anchor).Tokens);
        for (int i = 0; i < Prompts.Length; i++)
        {
            var alone = Alone(Prompts[i], Options(i));
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
        var batched = await Concurrently(s, Options, 1);
        for (int i = 0; i < Prompts.Length; i++) Assert.Equal(Alone(Prompts[i], Options(i)).Tokens, batched[i].Tokens);
    }

    [Fact]
    public async Task StopAndCancel_EndOnlyTheirOwnRow()
    {
        using var s = new BatchScheduler(_f.Lm, 4);
        var o = new GenerationOptions { MaxNewTokens = 20 };
        using var cancel = new CancellationTokenSource();
        var stopped = Task.Run(() => s.Generate(Prompts[0], o, (_, tokens) => tokens.Count < 3));
        var cancelled = Task.Run(() => s.Generate(Prompts[1], o, (_, tokens) => { if (tokens.Count == 4) cancel.Cancel(); return true; }, cancel.Token));
        var full = Task.Run(() => s.Generate(Prompts[2], o));
        var (st, ca, fu) = (await stopped, await cancelled, await full);
        Assert.Equal(FinishReason.Stop, st.FinishReason);
        Assert.Equal(Alone(Prompts[0], o).Tokens.Take(3), st.Tokens);
        Assert.Equal(FinishReason.Cancelled, ca.FinishReason);
        Assert.Equal(Alone(Prompts[1], o).Tokens.Take(4), ca.Tokens);
        Assert.Equal(Alone(Prompts[2], o).Tokens, fu.Tokens);
    }

    [Fact]
    public async Task TextGenerator_OverTheScheduler_CompletesAsAlone()
    {
        var dir = Repo.TempDir();
        try
        {
            var cfg = new Gpt2Config { VocabSize = 50257, NPositions = 64, NEmbd = 8, NLayer = 1, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0, InitializerRange = 0.5 };
            ModelKinds.WritePreset(dir, cfg, seed: 1);
            using var lm = new CausalLm(dir);
            var alone = new TextGenerator(lm, Gpt2Tokenizer.Create());
            using var s = new BatchScheduler(lm, 3);
            var batched = alone.With(s.Generate);
            string[] prompts = ["Hello there", "Call me Ishmael. Some years ago", "a", "The quick brown fox jumps"];
            GenerationOptions Options(int i) => new() { MaxNewTokens = 8 + 5 * i, Temperature = i % 2, Seed = i };
            string[] stop = [" the", "\n"];
            var got = await Task.WhenAll(prompts.Select((p, i) => Task.Run(() => batched.Complete(p, Options(i), stop))));
            for (int i = 0; i < prompts.Length; i++) Assert.Equal(alone.Complete(prompts[i], Options(i), stop), got[i]);
        }
        finally { Directory.Delete(dir, true); }
    }
}
