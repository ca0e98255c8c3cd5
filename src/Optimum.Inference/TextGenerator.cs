using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Optimum.Hub;

namespace Optimum.Inference;

/// <summary>Text out of a completion, with token counts for usage reports.</summary>
public sealed record Completion(string Text, FinishReason FinishReason, int PromptTokens, int CompletionTokens);

/// <summary>
/// Text in, text out over a causal LM (prompt continued) or an encoder-decoder (prompt = source
/// text): stop strings, and streaming that yields text as it is decoded, holding back bytes of an
/// unfinished UTF-8 character and text that may turn out to start a stop string.
/// <see cref="Complete"/> is the concatenation of the stream.
/// </summary>
public sealed class TextGenerator
{
    /// <summary>Generates the new tokens for one prompt; calls onToken after each (false stops).</summary>
    public delegate GenerationResult GenerateTokens(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken, CancellationToken cancel);

    private readonly Func<string, IReadOnlyList<int>> _encode;
    private readonly Func<IReadOnlyList<int>, string> _decode;
    private readonly GenerateTokens _generate;

    public TextGenerator(ModelTask task, Func<string, IReadOnlyList<int>> encode, Func<IReadOnlyList<int>, string> decode, GenerateTokens generate, int maxPositions, bool promptSharesContext)
    {
        Task = task;
        _encode = encode;
        _decode = decode;
        _generate = generate;
        MaxPositions = maxPositions;
        PromptSharesContext = promptSharesContext;
    }

    /// <summary>A causal LM continuing GPT-2-tokenized prompts; a model whose vocab_size the tokenizer does not fit is refused.</summary>
    public TextGenerator(CausalLm lm, Gpt2Tokenizer tokenizer)
        : this(ModelTask.CausalLm, tokenizer.Encode, ids => tokenizer.Decode(ids), (ids, o, on, ct) => Generator.Generate(lm, [ids], o, on, ct)[0], lm.MaxPositions, true)
    {
        CheckVocabulary(tokenizer.VocabSize, lm.VocabSize, "GPT-2's BPE tokenizer");
        CausalModel = lm;
    }

    /// <summary>The causal LM behind this generator (null for encoder-decoders): what a <see cref="BatchScheduler"/> batches.</summary>
    public CausalLm? CausalModel { get; private init; }
    /// <summary>The encoder-decoder behind this generator (null for causal LMs): what a <see cref="BatchScheduler"/> batches.</summary>
    public Seq2SeqLm? Seq2SeqModel { get; private init; }

    /// <summary>
    /// The same tokenizer, limits and stop-string handling over another way of generating tokens, e.g.
    /// <see cref="BatchScheduler.Generate"/> (continuous batching): <c>generator.With(scheduler.Generate)</c>.
    /// </summary>
    public TextGenerator With(GenerateTokens generate) =>
        new(Task, _encode, _decode, generate, MaxPositions, PromptSharesContext) { CausalModel = CausalModel, Seq2SeqModel = Seq2SeqModel };

    /// <summary>An encoder-decoder: the prompt is the source text; the completion is the generated target. <paramref name="tokenizerVocab"/> must fit the model.</summary>
    public static TextGenerator ForSeq2Seq(Seq2SeqLm lm, Func<string, IReadOnlyList<int>> encode, Func<IReadOnlyList<int>, string> decode, int tokenizerVocab)
    {
        CheckVocabulary(tokenizerVocab, lm.VocabSize, "the model folder's tokenizer");
        return new(ModelTask.Seq2Seq, encode, decode, (ids, o, on, ct) => lm.Generate([ids], o, on, ct)[0], lm.MaxPositions, false) { Seq2SeqModel = lm };
    }

    /// <summary>
    /// Every id the tokenizer can produce must be below the model's vocab_size, or a prompt would reach ONNX Runtime
    /// with an id its embedding cannot gather (a 500 on every request): such a model is refused at load.
    /// </summary>
    private static void CheckVocabulary(int tokenizerVocab, int modelVocab, string tokenizer)
    {
        if (tokenizerVocab > modelVocab)
            throw new InvalidDataException($"{char.ToUpperInvariant(tokenizer[0])}{tokenizer[1..]} has {tokenizerVocab:N0} tokens but the model's vocab_size is {modelVocab:N0}: prompts would hold ids the model cannot embed. Use a model whose vocab_size is at least {tokenizerVocab:N0}, or a tokenizer that fits.");
    }

    /// <summary><see cref="ModelTask.CausalLm"/> or <see cref="ModelTask.Seq2Seq"/>.</summary>
    public ModelTask Task { get; }
    public int MaxPositions { get; }
    /// <summary>True when prompt and generated tokens share one context window (causal LMs).</summary>
    public bool PromptSharesContext { get; }

    /// <summary>Prompt tokens of <paramref name="prompt"/>.</summary>
    public IReadOnlyList<int> Encode(string prompt) => _encode(prompt);

    /// <summary>
    /// Why a prompt of <paramref name="promptTokens"/> with <paramref name="maxTokens"/> new tokens does not fit, or null;
    /// <paramref name="maxName"/> is what the caller calls the token limit (the request field, or a flag).
    /// </summary>
    public string? CheckLength(int promptTokens, int maxTokens, string maxName = "max_tokens") => PromptSharesContext
        ? promptTokens + maxTokens > MaxPositions ? $"The prompt has {promptTokens} tokens; with {maxName} {maxTokens} that exceeds the model's context of {MaxPositions} tokens." : null
        : promptTokens > MaxPositions ? $"The prompt has {promptTokens} tokens; the model's input holds {MaxPositions}."
        : maxTokens + 1 > MaxPositions ? $"{maxName} {maxTokens} plus the decoder start token exceeds the model's output length of {MaxPositions} tokens." : null;

    public Completion Complete(string prompt, GenerationOptions o, IReadOnlyList<string>? stop = null, CancellationToken cancel = default)
    {
        var text = new System.Text.StringBuilder();
        Completion? last = null;
        foreach (var piece in Run(prompt, o, stop, cancel, done => last = done)) text.Append(piece);
        return last! with { Text = text.ToString() };
    }

    /// <summary>Streams text pieces; the generation runs on a worker thread and stops when <paramref name="cancel"/> fires.</summary>
    public async IAsyncEnumerable<string> StreamAsync(string prompt, GenerationOptions o, IReadOnlyList<string>? stop = null,
        Action<Completion>? completed = null, [EnumeratorCancellation] CancellationToken cancel = default)
    {
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        // Dedicated threads (LongRunning), not pool threads: each generation blocks two threads until it ends, and
        // many at once (continuous batching serves up to MaxConcurrent) would starve the pool that serves requests.
        var worker = System.Threading.Tasks.Task.Factory.StartNew(() =>
        {
            try
            {
                foreach (var piece in Run(prompt, o, stop, cancel, c => completed?.Invoke(c))) channel.Writer.TryWrite(piece);
                channel.Writer.TryComplete();
            }
            catch (Exception e) { channel.Writer.TryComplete(e); }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        await foreach (var piece in channel.Reader.ReadAllAsync(CancellationToken.None))
            yield return piece;
        await worker;
    }

    /// <summary>The generation as a lazy sequence of safe-to-show text pieces (runs on the caller's thread).</summary>
    private IEnumerable<string> Run(string prompt, GenerationOptions o, IReadOnlyList<string>? stop, CancellationToken cancel, Action<Completion> done)
    {
        var promptIds = _encode(prompt);
        if (promptIds.Count == 0) throw new ArgumentException("The prompt encodes to no tokens.", nameof(prompt));
        stop = stop?.Where(s => s.Length > 0).ToArray() ?? [];
        var pieces = new System.Collections.Concurrent.BlockingCollection<string>();
        string text = "";
        int emitted = 0, count = 0;
        FinishReason? reason = null;
        bool stopMatched = false;
        bool OnToken(int row, IReadOnlyList<int> tokens)
        {
            text = _decode(tokens);
            count = tokens.Count;
            // The earliest stop string in the text wins, as in OpenAI's API and HF.
            int at = stop.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
            if (at >= 0)
            {
                text = text[..at];
                reason = FinishReason.Stop;
                stopMatched = true;
                Flush(text.Length);
                return false;
            }
            Flush(SafeEnd(text, stop));
            if (!cancel.IsCancellationRequested) return true;
            reason = FinishReason.Cancelled;
            return false;
        }
        void Flush(int end)
        {
            if (end > emitted) { pieces.Add(text[emitted..end]); emitted = end; }
        }
        var producer = System.Threading.Tasks.Task.Factory.StartNew(() =>
        {
            try
            {
                var r = o.NumBeams > 1 ? _generate(promptIds, o, null, cancel) : _generate(promptIds, o, OnToken, cancel);
                if (o.NumBeams > 1) { OnToken(0, r.Tokens); }
                // OpenAI's finish reasons: "stop" for EOS or a stop string, "length" for max tokens.
                reason ??= r.FinishReason switch { FinishReason.Eos => FinishReason.Stop, FinishReason.Cancelled => FinishReason.Cancelled, _ => FinishReason.Length };
                if (!stopMatched) Flush(text.Length);       // the held-back rest, even a trailing partial character
                done(new Completion("", reason.Value, promptIds.Count, count));
            }
            finally { pieces.CompleteAdding(); }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        foreach (var p in pieces.GetConsumingEnumerable()) yield return p;
        producer.GetAwaiter().GetResult();
    }

    /// <summary>How much of <paramref name="text"/> can be shown: not a trailing U+FFFD (a character whose bytes are not all decoded yet), nor a tail that starts a stop string.</summary>
    internal static int SafeEnd(string text, IReadOnlyList<string> stop)
    {
        int end = text.Length;
        while (end > 0 && text[end - 1] == '\uFFFD') end--;
        foreach (var s in stop)
            for (int len = Math.Min(s.Length - 1, end); len > 0; len--)
                if (string.CompareOrdinal(text, end - len, s, 0, len) == 0) { end -= len; break; }
        return end;
    }
}
