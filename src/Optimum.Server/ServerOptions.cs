using System.ComponentModel;
using Optimum.Core;
using System.Globalization;

namespace Optimum.Server;

/// <summary>
/// Options of the Optimum endpoints: set in code with <c>services.AddOptimum(o =&gt; ...)</c>, or bound from the
/// configuration section "Optimum" (<c>--Optimum:Models:0=&lt;folder&gt;</c>, <c>OPTIMUM__APIKEY</c>); code runs after binding.
/// </summary>
public sealed class ServerOptions
{
    /// <summary>The configuration section the options are bound from.</summary>
    public const string Section = "Optimum";

    /// <summary>
    /// Model folders to serve, in order: requests without "model" get the first of the kind they need. In configuration
    /// each is a string, "name=path" or a path (named after its folder), or an object with Name and Folder.
    /// </summary>
    public List<ServedModel> Models { get; set; } = [];
    /// <summary>
    /// LoRA adapters (PEFT folders) served over a model of <see cref="Models"/>, each under its own name: the base's weights
    /// are loaded once and shared by the base and all its adapters. In configuration each is a string "name=folder@base".
    /// </summary>
    public List<ServedAdapter> Adapters { get; set; } = [];
    /// <summary>When set, /v1/* requests need "Authorization: Bearer &lt;key&gt;".</summary>
    public string? ApiKey { get; set; }
    /// <summary>Completions, forecasts and image generations computed at once (with <see cref="ContinuousBatching"/>, a language model's batch rows).</summary>
    public int MaxConcurrent { get; set; } = 2;
    /// <summary>
    /// Continuous batching of causal LMs and encoder-decoders (T5): concurrent completions share each decode step (up to
    /// <see cref="MaxConcurrent"/> rows; a request joins at the next step and leaves when it finishes). Off: each completion
    /// decodes alone. Beam search, and T5 folders whose decoder predates decoder_attention_mask, always decode alone.
    /// </summary>
    public bool ContinuousBatching { get; set; } = true;
    /// <summary>Requests waiting for a slot (and forecasts and image generations waiting for their model); more get 429.</summary>
    public int QueueLimit { get; set; } = 16;
    /// <summary>A completion, forecast or image generation taking longer is stopped (504, or an error event when streaming).</summary>
    public double RequestTimeoutSeconds { get; set; } = 60;
    /// <summary>Larger request bodies get 413.</summary>
    public int MaxBodyBytes { get; set; } = 64 * 1024;
    /// <summary>Upper bound of max_tokens.</summary>
    public int MaxTokens { get; set; } = 1024;
    /// <summary>Upper bound of the number of series in one /v1/forecast request.</summary>
    public int MaxForecastSeries { get; set; } = 64;
    /// <summary>Upper bound of "samples" (sample paths per series) in /v1/forecast.</summary>
    public int MaxForecastSamples { get; set; } = 1000;
    /// <summary>Upper bound of "count" (images in one /v1/images/generations request).</summary>
    public int MaxImages { get; set; } = 16;
    /// <summary>ONNX Runtime intra-op threads per model (0: ONNX Runtime chooses).</summary>
    public int Threads { get; set; } = Environment.ProcessorCount;
    /// <summary>Where models run: cpu, cuda or cuda:N (see <see cref="ExecutionDevice"/>); CUDA that cannot load fails the start, never falls back to the CPU.</summary>
    public string Device { get; set; } = "cpu";

    // Slow clients. A request's body is read whole before it waits for a generation slot, so a client that trickles
    // its request holds a connection, never a slot; these bound how long and how many.
    /// <summary>A request's body must arrive within this (408, the connection closed).</summary>
    public double RequestBodyTimeoutSeconds { get; set; } = 30;
    /// <summary>After a grace period of 5 s, a body arriving slower than this is cut off (Kestrel's 408); 0: no minimum.</summary>
    public int MinRequestBodyBytesPerSecond { get; set; } = 1024;
    /// <summary>A request's headers must arrive within this, else Kestrel closes the connection (Kestrel's default: 30 s). Server-wide: see <see cref="OptimumServer.ApplyLimits"/>.</summary>
    public double RequestHeadersTimeoutSeconds { get; set; } = 10;
    /// <summary>An idle keep-alive connection is closed after this (Kestrel's default: 130 s). Server-wide.</summary>
    public double KeepAliveTimeoutSeconds { get; set; } = 60;
    /// <summary>Larger request headers get 431 (Kestrel's default: 32 KiB). Server-wide.</summary>
    public int MaxRequestHeadersBytes { get; set; } = 16 * 1024;
    /// <summary>Open connections at most; more wait in the listen backlog (0: no limit, Kestrel's default). Server-wide.</summary>
    public int MaxConnections { get; set; } = 1000;

    /// <summary>Throws <see cref="InvalidOperationException"/> naming every invalid option with its value and the valid range.</summary>
    public void Validate()
    {
        var problems = Problems();
        if (problems.Count > 0) throw new InvalidOperationException(string.Join("; ", problems) + ".");
    }

    /// <summary>What is wrong with these options, one clause per option that names it and its value (joined with "; " in errors); empty when they are valid.</summary>
    private List<string> Problems()
    {
        var problems = new List<string>();
        void AtLeast(string name, double value, double min)
        {
            if (value < min) problems.Add($"{Section}:{name} must be at least {min.ToString(CultureInfo.InvariantCulture)}, got {value.ToString(CultureInfo.InvariantCulture)}");
        }
        if (Models.Count == 0)
            problems.Add($"{Section}:{nameof(Models)} is empty: name a model folder to serve (AddOptimum(o => o.Models.Add(...)), --{Section}:{nameof(Models)}:0=<folder>, serve --model <folder>)");
        for (int i = 0; i < Models.Count; i++)
        {
            var (name, folder) = (Models[i]?.Name, Models[i]?.Folder);
            if (string.IsNullOrWhiteSpace(name) || string.IsNullOrWhiteSpace(folder))
                problems.Add($"{Section}:{nameof(Models)}:{i} needs a name and a folder, got name '{name}' and folder '{folder}'");
            else if (!Directory.Exists(folder))
                problems.Add($"{Section}:{nameof(Models)}:{i} ('{name}'): the folder '{folder}' does not exist");
            else if (Models.FindIndex(m => m?.Name == name) is var first && first < i)
                problems.Add($"{Section}:{nameof(Models)}:{i}: models {first} and {i} are both named '{name}' (rename one with name=path)");
        }
        for (int i = 0; i < Adapters.Count; i++)
        {
            var (name, folder, @base) = (Adapters[i]?.Name, Adapters[i]?.Folder, Adapters[i]?.Base);
            var key = $"{Section}:{nameof(Adapters)}:{i}";
            if (string.IsNullOrWhiteSpace(name) || string.IsNullOrWhiteSpace(folder) || string.IsNullOrWhiteSpace(@base))
                problems.Add($"{key} needs name=folder@base, got name '{name}', folder '{folder}' and base '{@base}'");
            else if (!Directory.Exists(folder))
                problems.Add($"{key} ('{name}'): the adapter folder '{folder}' does not exist");
            else if (!Models.Any(m => m?.Name == @base))
                problems.Add($"{key} ('{name}'): its base '{@base}' is not a served model (served: {string.Join(", ", Models.Select(m => m?.Name))})");
            else if (Models.Any(m => m?.Name == name) || Adapters.FindIndex(a => a?.Name == name) < i)
                problems.Add($"{key}: the name '{name}' is already taken by a model or an earlier adapter");
        }
        AtLeast(nameof(MaxConcurrent), MaxConcurrent, 1);
        AtLeast(nameof(QueueLimit), QueueLimit, 0);
        if (!(RequestTimeoutSeconds > 0))
            problems.Add($"{Section}:{nameof(RequestTimeoutSeconds)} must be greater than 0, got {RequestTimeoutSeconds.ToString(CultureInfo.InvariantCulture)}");
        AtLeast(nameof(MaxBodyBytes), MaxBodyBytes, 64);
        AtLeast(nameof(MaxTokens), MaxTokens, 1);
        AtLeast(nameof(MaxForecastSeries), MaxForecastSeries, 1);
        AtLeast(nameof(MaxForecastSamples), MaxForecastSamples, 1);
        AtLeast(nameof(MaxImages), MaxImages, 1);
        AtLeast(nameof(Threads), Threads, 0);
        try { ExecutionDevice.Parse(Device ?? "", $"{Section}:{nameof(Device)}"); }
        catch (ArgumentException e) { problems.Add(e.Message.TrimEnd('.')); }
        foreach (var (name, seconds) in new[] { (nameof(RequestBodyTimeoutSeconds), RequestBodyTimeoutSeconds), (nameof(RequestHeadersTimeoutSeconds), RequestHeadersTimeoutSeconds), (nameof(KeepAliveTimeoutSeconds), KeepAliveTimeoutSeconds) })
            if (!(seconds > 0 && seconds <= TimeSpan.MaxValue.TotalSeconds / 2))
                problems.Add($"{Section}:{name} must be a positive number of seconds, got {seconds.ToString(CultureInfo.InvariantCulture)}");
        AtLeast(nameof(MinRequestBodyBytesPerSecond), MinRequestBodyBytesPerSecond, 0);
        AtLeast(nameof(MaxRequestHeadersBytes), MaxRequestHeadersBytes, 1024);
        AtLeast(nameof(MaxConnections), MaxConnections, 0);
        return problems;
    }
}

/// <summary>A model to serve: <paramref name="Name"/> is what requests put in "model", <paramref name="Folder"/> the model folder.</summary>
[TypeConverter(typeof(ServedModelConverter))]
public sealed record ServedModel(string Name, string Folder)
{
    /// <summary>"name=path", or a path, which names the model after its folder ("models/tiny-gpt2/" is "tiny-gpt2").</summary>
    public static ServedModel Parse(string spec)
    {
        int eq = spec.IndexOf('=');
        if (eq >= 0) return new(spec[..eq], spec[(eq + 1)..]);
        return string.IsNullOrWhiteSpace(spec) ? new("", spec) : new(Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(spec))), spec);
    }

    public override string ToString() => $"{Name}={Folder}";
}

/// <summary>A LoRA adapter to serve: <paramref name="Name"/> is what requests put in "model", <paramref name="Folder"/> the PEFT folder, <paramref name="Base"/> the served model it adapts.</summary>
[TypeConverter(typeof(ServedAdapterConverter))]
public sealed record ServedAdapter(string Name, string Folder, string Base)
{
    /// <summary>"name=folder@base" (the last '@' splits folder and base); anything else is refused naming the form.</summary>
    public static ServedAdapter Parse(string spec)
    {
        int eq = spec.IndexOf('='), at = spec.LastIndexOf('@');
        if (eq <= 0 || at <= eq + 1 || at == spec.Length - 1)
            throw new FormatException($"Adapter '{spec}' is not name=folder@base (e.g. pirate=runs/lora/adapter@gpt2).");
        return new(spec[..eq], spec[(eq + 1)..at], spec[(at + 1)..]);
    }

    public override string ToString() => $"{Name}={Folder}@{Base}";
}

/// <summary>Lets configuration binding read a <see cref="ServedAdapter"/> from "name=folder@base".</summary>
internal sealed class ServedAdapterConverter : TypeConverter
{
    public override bool CanConvertFrom(ITypeDescriptorContext? context, Type sourceType) => sourceType == typeof(string) || base.CanConvertFrom(context, sourceType);

    public override object? ConvertFrom(ITypeDescriptorContext? context, CultureInfo? culture, object value) =>
        value is string s ? ServedAdapter.Parse(s) : base.ConvertFrom(context, culture, value);
}

/// <summary>Lets configuration binding read a <see cref="ServedModel"/> from its string form, "name=path" or a path.</summary>
internal sealed class ServedModelConverter : TypeConverter
{
    public override bool CanConvertFrom(ITypeDescriptorContext? context, Type sourceType) => sourceType == typeof(string) || base.CanConvertFrom(context, sourceType);

    public override object? ConvertFrom(ITypeDescriptorContext? context, CultureInfo? culture, object value) =>
        value is string s ? ServedModel.Parse(s) : base.ConvertFrom(context, culture, value);
}
