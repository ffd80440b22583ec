/* extract_struct.c - structured extraction into a C struct: the session answers with
 * JSON that follows a JSON Schema (guided generation guarantees it), and the program
 * reads the fields into a plain struct. The tiny test model invents the values; the
 * shape is always right. usage: example_extract_struct MODEL.gguf */
#include <orchard.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[32];
    int age;
    bool likes_cats;
} person;

/* A minimal reader for the flat object the schema allows: "key":value pairs. */
static const char *field(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? p + strlen(pat) : NULL;
}

static bool parse_person(const char *json, person *out)
{
    const char *n = field(json, "name"), *a = field(json, "age"), *c = field(json, "likes_cats");
    if (!n || !a || !c || *n != '"')
        return false;
    const char *end = strchr(n + 1, '"');
    size_t len = end ? (size_t)(end - n - 1) : 0;
    if (!end || len >= sizeof out->name)
        return false;
    memcpy(out->name, n + 1, len);
    out->name[len] = 0;
    out->age = atoi(a);
    out->likes_cats = !strncmp(c, "true", 4);
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    orc_model *model = NULL;
    if (orc_model_load(argv[1], NULL, &model) != ORC_OK) {
        fprintf(stderr, "load: %s\n", orc_last_error());
        return 1;
    }
    orc_session_params sp = orc_session_default_params();
    sp.instructions = "Extract the person described by the user.";
    sp.defaults.sampler.temperature = 0;
    sp.defaults.max_tokens = 100;
    orc_session *session = NULL;
    int rc = 1;
    if (orc_session_new(model, &sp, &session) != ORC_OK) {
        fprintf(stderr, "session: %s\n", orc_last_error());
        goto out;
    }
    orc_request req = orc_request_default();
    req.prompt = "Lily is a girl of seven who loves her cat.";
    /* plain names without escapes keep the reader above simple */
    req.schema = "{\"type\":\"object\",\"properties\":{"
                 "\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z]{1,20}$\"},"
                 "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},"
                 "\"likes_cats\":{\"type\":\"boolean\"}},"
                 "\"required\":[\"name\",\"age\",\"likes_cats\"],\"additionalProperties\":false}";
    char *json = NULL;
    if (orc_session_respond_ex(session, &req, &json, NULL) != ORC_OK) {
        fprintf(stderr, "respond: %s\n", orc_last_error());
        goto out;
    }
    person p;
    if (!parse_person(json, &p)) {
        fprintf(stderr, "unexpected shape: %s\n", json);
    } else {
        printf("JSON: %s\nperson { name = \"%s\", age = %d, likes_cats = %s }\n", json, p.name, p.age,
               p.likes_cats ? "true" : "false");
        rc = p.age >= 0 && p.age <= 120 ? 0 : 1;
    }
    orc_free(json);
out:
    orc_session_free(session);
    orc_model_free(model);
    return rc;
}
