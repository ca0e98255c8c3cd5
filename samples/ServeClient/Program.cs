// Hosts the completions service inside an ASP.NET Core app of its own (AddOptimum / MapOptimum beside the app's
// own /hello route) on a trained model (by default the Moby-Dick sample's out/moby-dick/final) on 127.0.0.1,
// then streams a completion from it with a plain HttpClient, printing text as it arrives.
// Usage: dotnet run -c Release --project samples/ServeClient [-- <model folder> "<prompt>"]
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Optimum.Models;
using Optimum.Server;

var modelDir = args.Length > 0 ? args[0] : "out/moby-dick/final";
var prompt = args.Length > 1 ? args[1] : "Call me Ishmael.";
if (!File.Exists(Path.Combine(modelDir, "model.safetensors")))
{
    Console.WriteLine($"{modelDir} has no trained model (run: dotnet run -c Release --project samples/MobyDick); serving an untrained gpt2-mini instead.");
    modelDir = "out/serve-client/gpt2-mini";
    ModelKinds.WritePreset(modelDir, Gpt2Kind.Mini, seed: 0);
}

var builder = WebApplication.CreateSlimBuilder(["--urls", "http://127.0.0.1:0"]);
builder.Logging.AddFilter("Microsoft", Microsoft.Extensions.Logging.LogLevel.Warning);
builder.Services.AddOptimum(o => o.Models.Add(new ServedModel("moby-dick", modelDir)));
await using var app = builder.Build();
app.MapGet("/hello", () => "the app's own route");
app.MapOptimum();
await app.StartAsync();
var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
Console.WriteLine($"service on {address}");

using var http = new HttpClient { BaseAddress = new Uri(address) };
var models = await http.GetFromJsonAsync<JsonElement>("/v1/models");
Console.WriteLine($"/hello: {await http.GetStringAsync("/hello")}");
Console.WriteLine($"models: {string.Join(", ", models.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()))}");

using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
{
    Content = JsonContent.Create(new { model = "moby-dick", prompt, max_tokens = 60, temperature = 0.8, top_p = 0.95, seed = 7, stream = true }),
};
using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
response.EnsureSuccessStatusCode();
using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
Console.Write(prompt);
string? finish = null;
while (await reader.ReadLineAsync() is { } line)
{
    if (!line.StartsWith("data: ")) continue;
    var data = line["data: ".Length..];
    if (data == "[DONE]") break;
    var choice = JsonDocument.Parse(data).RootElement.GetProperty("choices")[0];
    Console.Write(choice.GetProperty("text").GetString());
    if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
}
Console.WriteLine($"\n[finish_reason: {finish}]");
await app.StopAsync();
