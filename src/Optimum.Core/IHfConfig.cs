using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>A typed model config read from and written to a Hugging Face <c>config.json</c> document.</summary>
public interface IHfConfig<TSelf> where TSelf : IHfConfig<TSelf>
{
    /// <summary>Reads the config; unsupported or malformed values are refused naming the file and the field.</summary>
    static abstract TSelf FromHf(HfConfig config);

    /// <summary>The config.json document (unknown keys of the source document kept).</summary>
    JsonObject ToHf();
}
