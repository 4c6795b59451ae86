"""A bilingual (English-Russian) concept corpus: controlled data with known labels.

Why (issue 2, "The embedded corpora" 2): probing, fusion and evaluation need text whose
content is known exactly: which concepts each sentence mentions, in which language, and
which sentences a model has never seen. This module holds a hand-written lexicon of
concepts (`LEXICON`, 14 `CATEGORIES`) and templates that turn it into

- parallel sentence pairs ("The cat sleeps." / "Кошка спит."),
- word-translation lines ("cat — кошка"),
- monolingual documents (several sentences in one language),

mixed by `parallel_ratio`, deterministic from a seed and unbounded.

Russian grammar: every Russian form a template uses is stored explicitly in the lexicon
(noun case forms nom/acc/gen and nom/gen plural with gender; adjective forms by gender,
number and the accusative; verb person/number and past-tense gender forms; the case a numeral
governs; the full "where"/"when" phrase with its preposition). Templates only pick stored
forms, so agreement is decided by data written and checked by hand, never by suffix rules.

Held-out evaluation data: a sentence pair is held out when a hash of its English or its
Russian text falls in the first `HOLDOUT_PERCENT` buckets (of 100); its English bucket says
which eval split it belongs to (< 2: "test", < 4: "validation"). The rule is fixed (it does not
depend on the seed), so the held-out set is the same for every run, and training output
never contains a held-out English or Russian sentence. Optionally whole concepts are held out
(`holdout_concepts`): training then never mentions them (not in sentences, not in word
lines), and the "test" split adds sentences that contain them.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from bvvlab.corpus.documents import Document

# ----------------------------------------------------------------------------- lexicon

CATEGORIES: tuple[str, ...] = (
    "animals", "colours", "numbers", "family", "people", "food", "body", "places", "time",
    "professions", "verbs", "adjectives", "things", "nature",
)
ANIMATE = ("animals", "family", "people", "professions")  # nouns that can be a sentence subject
HUMAN = ("family", "people", "professions")


@dataclass(frozen=True, eq=False)
class Concept:
    """One lexicon entry with every English and Russian form the templates use."""

    id: str  # unique id, e.g. "cat" (an English lemma, disambiguated where needed: "orange_fruit")
    category: str  # one of CATEGORIES
    pos: str  # "noun" | "adj" | "verb" | "num"
    en: dict[str, str]  # English forms by name (noun: sg, pl, det; adj: base; verb: base, 3sg, past; ...)
    ru: dict[str, str]  # Russian forms by name (noun: gender, nom, acc, gen, nom_pl, gen_pl; ...)
    applies: tuple[str, ...] = ()  # adjectives/verbs: noun categories they combine with

    @property
    def en_lemma(self) -> str:
        return self.en["sg"] if self.pos == "noun" else self.en["base"]

    @property
    def ru_lemma(self) -> str:
        return self.ru[{"noun": "nom", "adj": "m", "verb": "inf", "num": "m"}[self.pos]]

    @property
    def countable(self) -> bool:
        return self.pos == "noun" and self.en["det"] in ("a", "an") and self.ru.get("nom_pl", "-") != "-"


_ENTRIES: list[Concept] = []


def _noun(cat: str, id_: str, en: str, ru: str, *, pl: str | None = None, det: str | None = None,
          en_sg: str | None = None, loc: tuple[str, str] | None = None, when: tuple[str, str] | None = None) -> None:
    """ru = "gender nom acc gen nom_pl gen_pl" ("-" where a form does not exist: mass nouns)."""
    g, nom, acc, gen, nom_pl, gen_pl = ru.split()
    sg = en_sg or en
    if det is None:
        det = "an" if sg[0] in "aeiou" else "a"
    en_forms = {"sg": sg, "pl": pl or (sg + "s"), "det": det}
    ru_forms = {"gender": g, "nom": nom, "acc": acc, "gen": gen, "nom_pl": nom_pl, "gen_pl": gen_pl}
    if loc:
        en_forms["loc"], ru_forms["loc"] = loc
    if when:
        en_forms["when"], ru_forms["when"] = when
    _ENTRIES.append(Concept(id_, cat, "noun", en_forms, ru_forms))


def _nouns(cat: str, rows: str, **kw) -> None:
    """Rows "id | english | ru forms [| english plural]" (plural defaults to english + s)."""
    for line in rows.strip().splitlines():
        parts = [p.strip() for p in line.split("|")]
        _noun(cat, parts[0], parts[1], parts[2], pl=parts[3] if len(parts) > 3 and parts[3] else None,
              det=parts[4] if len(parts) > 4 else None, **kw)


# Russian noun forms: gender, nominative, accusative, genitive (sg), nominative and genitive plural.
_nouns("animals", """
cat | cat | f кошка кошку кошки кошки кошек
dog | dog | f собака собаку собаки собаки собак
horse | horse | f лошадь лошадь лошади лошади лошадей
cow | cow | f корова корову коровы коровы коров
pig | pig | f свинья свинью свиньи свиньи свиней
sheep | sheep | f овца овцу овцы овцы овец | sheep
goat | goat | f коза козу козы козы коз
hen | hen | f курица курицу курицы куры кур
duck | duck | f утка утку утки утки уток
mouse | mouse | f мышь мышь мыши мыши мышей | mice
rabbit | rabbit | m кролик кролика кролика кролики кроликов
bear | bear | m медведь медведя медведя медведи медведей
wolf | wolf | m волк волка волка волки волков | wolves
fox | fox | f лиса лису лисы лисы лис | foxes
lion | lion | m лев льва льва львы львов
tiger | tiger | m тигр тигра тигра тигры тигров
elephant | elephant | m слон слона слона слоны слонов
monkey | monkey | f обезьяна обезьяну обезьяны обезьяны обезьян
bird | bird | f птица птицу птицы птицы птиц
fish | fish | f рыба рыбу рыбы рыбы рыб | fish
frog | frog | f лягушка лягушку лягушки лягушки лягушек
snake | snake | f змея змею змеи змеи змей
owl | owl | f сова сову совы совы сов
bee | bee | f пчела пчелу пчелы пчёлы пчёл
butterfly | butterfly | f бабочка бабочку бабочки бабочки бабочек | butterflies
hedgehog | hedgehog | m ёж ежа ежа ежи ежей
squirrel | squirrel | f белка белку белки белки белок
deer | deer | m олень оленя оленя олени оленей | deer
camel | camel | m верблюд верблюда верблюда верблюды верблюдов
goose | goose | m гусь гуся гуся гуси гусей | geese
whale | whale | m кит кита кита киты китов
""")
_nouns("family", """
mother | mother | f мать мать матери матери матерей
father | father | m отец отца отца отцы отцов
sister | sister | f сестра сестру сестры сёстры сестёр
brother | brother | m брат брата брата братья братьев
son | son | m сын сына сына сыновья сыновей
daughter | daughter | f дочь дочь дочери дочери дочерей
grandmother | grandmother | f бабушка бабушку бабушки бабушки бабушек
grandfather | grandfather | m дедушка дедушку дедушки дедушки дедушек
uncle | uncle | m дядя дядю дяди дяди дядей
aunt | aunt | f тётя тётю тёти тёти тёть
wife | wife | f жена жену жены жёны жён | wives
husband | husband | m муж мужа мужа мужья мужей
""")
_nouns("people", """
child | child | m ребёнок ребёнка ребёнка дети детей | children
friend | friend | m друг друга друга друзья друзей
girl | girl | f девочка девочку девочки девочки девочек
boy | boy | m мальчик мальчика мальчика мальчики мальчиков
man | man | m мужчина мужчину мужчины мужчины мужчин | men
woman | woman | f женщина женщину женщины женщины женщин | women
neighbor | neighbor | m сосед соседа соседа соседи соседей
guest | guest | m гость гостя гостя гости гостей
""")
_nouns("professions", """
teacher | teacher | m учитель учителя учителя учителя учителей
doctor | doctor | m врач врача врача врачи врачей
cook | cook | m повар повара повара повара поваров
driver | driver | m водитель водителя водителя водители водителей
pilot | pilot | m пилот пилота пилота пилоты пилотов
farmer | farmer | m фермер фермера фермера фермеры фермеров
artist | artist | m художник художника художника художники художников
singer | singer | m певец певца певца певцы певцов
writer | writer | m писатель писателя писателя писатели писателей
student | student | m студент студента студента студенты студентов
engineer | engineer | m инженер инженера инженера инженеры инженеров
soldier | soldier | m солдат солдата солдата солдаты солдат
police_officer | police officer | m полицейский полицейского полицейского полицейские полицейских
baker | baker | m пекарь пекаря пекаря пекари пекарей
builder | builder | m строитель строителя строителя строители строителей
nurse | nurse | f медсестра медсестру медсестры медсёстры медсестёр
scientist | scientist | m учёный учёного учёного учёные учёных
musician | musician | m музыкант музыканта музыканта музыканты музыкантов
dancer | dancer | m танцор танцора танцора танцоры танцоров
lawyer | lawyer | m юрист юриста юриста юристы юристов
""")
# mass nouns: no article in English, no plural forms ("-")
_nouns("food", """
apple | apple | n яблоко яблоко яблока яблоки яблок
pear | pear | f груша грушу груши груши груш
banana | banana | m банан банан банана бананы бананов
orange_fruit | orange | m апельсин апельсин апельсина апельсины апельсинов
lemon | lemon | m лимон лимон лимона лимоны лимонов
tomato | tomato | m помидор помидор помидора помидоры помидоров | tomatoes
cucumber | cucumber | m огурец огурец огурца огурцы огурцов
egg | egg | n яйцо яйцо яйца яйца яиц
cake | cake | m торт торт торта торты тортов
sandwich | sandwich | m бутерброд бутерброд бутерброда бутерброды бутербродов | sandwiches
pie | pie | m пирог пирог пирога пироги пирогов
candy | candy | f конфета конфету конфеты конфеты конфет | candies
cherry | cherry | f вишня вишню вишни вишни вишен | cherries
plum | plum | f слива сливу сливы сливы слив
watermelon | watermelon | m арбуз арбуз арбуза арбузы арбузов
nut | nut | m орех орех ореха орехи орехов
mushroom | mushroom | m гриб гриб гриба грибы грибов
bread | bread | m хлеб хлеб хлеба - - | | 
milk | milk | n молоко молоко молока - - | | 
water | water | f вода воду воды - - | | 
tea | tea | m чай чай чая - - | | 
coffee | coffee | m кофе кофе кофе - - | | 
juice | juice | m сок сок сока - - | | 
soup | soup | m суп суп супа - - | | 
cheese | cheese | m сыр сыр сыра - - | | 
butter | butter | n масло масло масла - - | | 
rice | rice | m рис рис риса - - | | 
sugar | sugar | m сахар сахар сахара - - | | 
salt | salt | f соль соль соли - - | | 
meat | meat | n мясо мясо мяса - - | | 
porridge | porridge | f каша кашу каши - - | | 
honey | honey | m мёд мёд мёда - - | | 
""")
DRINKS = frozenset({"milk", "water", "tea", "coffee", "juice"})
_nouns("body", """
head | head | f голова голову головы головы голов
hand | hand | f рука руку руки руки рук
leg | leg | f нога ногу ноги ноги ног
eye | eye | m глаз глаз глаза глаза глаз
ear | ear | n ухо ухо уха уши ушей
nose | nose | m нос нос носа носы носов
mouth | mouth | m рот рот рта рты ртов
tooth | tooth | m зуб зуб зуба зубы зубов | teeth
finger | finger | m палец палец пальца пальцы пальцев
heart | heart | n сердце сердце сердца сердца сердец
back | back | f спина спину спины спины спин
neck | neck | f шея шею шеи шеи шей
shoulder | shoulder | n плечо плечо плеча плечи плеч
knee | knee | n колено колено колена колени коленей
face | face | n лицо лицо лица лица лиц
tongue | tongue | m язык язык языка языки языков
lip | lip | f губа губу губы губы губ
elbow | elbow | m локоть локоть локтя локти локтей
stomach | stomach | m живот живот живота животы животов
brain | brain | m мозг мозг мозга мозги мозгов
""")
_nouns("things", """
table | table | m стол стол стола столы столов
chair | chair | m стул стул стула стулья стульев
bed | bed | f кровать кровать кровати кровати кроватей
door | door | f дверь дверь двери двери дверей
window | window | n окно окно окна окна окон
book | book | f книга книгу книги книги книг
pen | pen | f ручка ручку ручки ручки ручек
cup | cup | f чашка чашку чашки чашки чашек
plate | plate | f тарелка тарелку тарелки тарелки тарелок
spoon | spoon | f ложка ложку ложки ложки ложек
knife | knife | m нож нож ножа ножи ножей | knives
fork | fork | f вилка вилку вилки вилки вилок
lamp | lamp | f лампа лампу лампы лампы ламп
key | key | m ключ ключ ключа ключи ключей
box | box | f коробка коробку коробки коробки коробок | boxes
bag | bag | f сумка сумку сумки сумки сумок
ball | ball | m мяч мяч мяча мячи мячей
car | car | f машина машину машины машины машин
bicycle | bicycle | m велосипед велосипед велосипеда велосипеды велосипедов
phone | phone | m телефон телефон телефона телефоны телефонов
computer | computer | m компьютер компьютер компьютера компьютеры компьютеров
picture | picture | f картина картину картины картины картин
mirror | mirror | n зеркало зеркало зеркала зеркала зеркал
toy | toy | f игрушка игрушку игрушки игрушки игрушек
umbrella | umbrella | m зонт зонт зонта зонты зонтов
letter | letter | n письмо письмо письма письма писем
shirt | shirt | f рубашка рубашку рубашки рубашки рубашек
hat | hat | f шапка шапку шапки шапки шапок
""")
# unique things take "the" ("I see the sun"); mass ones no article; both have no plural here
_nouns("nature", """
sun | sun | n солнце солнце солнца - - | | the
moon | moon | f луна луну луны - - | | the
sky | sky | n небо небо неба - - | | the
star | star | f звезда звезду звезды звёзды звёзд
tree | tree | n дерево дерево дерева деревья деревьев
flower | flower | m цветок цветок цветка цветы цветов
cloud | cloud | n облако облако облака облака облаков
stone | stone | m камень камень камня камни камней
leaf | leaf | m лист лист листа листья листьев | leaves
grass | grass | f трава траву травы - - | | 
rain | rain | m дождь дождь дождя - - | | the
snow | snow | m снег снег снега - - | | 
wind | wind | m ветер ветер ветра - - | | the
fire | fire | m огонь огонь огня - - | | 
ice | ice | m лёд лёд льда - - | | 
""")

_PLACES = """
city | city | m город город города города городов | cities | in the city | в городе
village | village | f деревня деревню деревни деревни деревень | | in the village | в деревне
house | house | m дом дом дома дома домов | | in the house | в доме
school | school | f школа школу школы школы школ | | at school | в школе
shop | shop | m магазин магазин магазина магазины магазинов | | in the shop | в магазине
park | park | m парк парк парка парки парков | | in the park | в парке
forest | forest | m лес лес леса леса лесов | | in the forest | в лесу
river | river | f река реку реки реки рек | | in the river | в реке
sea | sea | n море море моря моря морей | | in the sea | в море
mountain | mountain | f гора гору горы горы гор | | on the mountain | на горе
street | street | f улица улицу улицы улицы улиц | | on the street | на улице
room | room | f комната комнату комнаты комнаты комнат | | in the room | в комнате
kitchen | kitchen | f кухня кухню кухни кухни кухонь | | in the kitchen | на кухне
garden | garden | m сад сад сада сады садов | | in the garden | в саду
library | library | f библиотека библиотеку библиотеки библиотеки библиотек | libraries | in the library | в библиотеке
hospital | hospital | f больница больницу больницы больницы больниц | | in the hospital | в больнице
office | office | m офис офис офиса офисы офисов | | in the office | в офисе
station | station | m вокзал вокзал вокзала вокзалы вокзалов | | at the station | на вокзале
airport | airport | m аэропорт аэропорт аэропорта аэропорты аэропортов | | at the airport | в аэропорту
beach | beach | m пляж пляж пляжа пляжи пляжей | beaches | on the beach | на пляже
field | field | n поле поле поля поля полей | | in the field | в поле
bridge | bridge | m мост мост моста мосты мостов | | on the bridge | на мосту
lake | lake | n озеро озеро озера озёра озёр | | in the lake | в озере
zoo | zoo | m зоопарк зоопарк зоопарка зоопарки зоопарков | | at the zoo | в зоопарке
market | market | m рынок рынок рынка рынки рынков | | at the market | на рынке
island | island | m остров остров острова острова островов | | on the island | на острове
theater | theater | m театр театр театра театры театров | | at the theater | в театре
"""
for _line in _PLACES.strip().splitlines():
    _p = [x.strip() for x in _line.split("|")]
    _noun("places", _p[0], _p[1], _p[2], pl=_p[3] or None, loc=(_p[4], _p[5]))

_TIME = """
monday | Monday | m понедельник понедельник понедельника | on Monday | в понедельник
tuesday | Tuesday | m вторник вторник вторника | on Tuesday | во вторник
wednesday | Wednesday | f среда среду среды | on Wednesday | в среду
thursday | Thursday | m четверг четверг четверга | on Thursday | в четверг
friday | Friday | f пятница пятницу пятницы | on Friday | в пятницу
saturday | Saturday | f суббота субботу субботы | on Saturday | в субботу
sunday | Sunday | n воскресенье воскресенье воскресенья | on Sunday | в воскресенье
january | January | m январь январь января | in January | в январе
february | February | m февраль февраль февраля | in February | в феврале
march | March | m март март марта | in March | в марте
april | April | m апрель апрель апреля | in April | в апреле
may | May | m май май мая | in May | в мае
june | June | m июнь июнь июня | in June | в июне
july | July | m июль июль июля | in July | в июле
august | August | m август август августа | in August | в августе
september | September | m сентябрь сентябрь сентября | in September | в сентябре
october | October | m октябрь октябрь октября | in October | в октябре
november | November | m ноябрь ноябрь ноября | in November | в ноябре
december | December | m декабрь декабрь декабря | in December | в декабре
winter | winter | f зима зиму зимы | in winter | зимой
spring | spring | f весна весну весны | in spring | весной
summer | summer | n лето лето лета | in summer | летом
autumn | autumn | f осень осень осени | in autumn | осенью
morning | morning | n утро утро утра | in the morning | утром
afternoon | afternoon | m день день дня | in the afternoon | днём
evening | evening | m вечер вечер вечера | in the evening | вечером
night | night | f ночь ночь ночи | at night | ночью
"""
DAYS = frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})
for _line in _TIME.strip().splitlines():
    _p = [x.strip() for x in _line.split("|")]
    _noun("time", _p[0], _p[1], _p[2] + " - -", det="", when=(_p[3], _p[4]))

_GROUPS = {
    "animate": ANIMATE, "human": HUMAN, "thing": ("things",), "countable_food": ("food",),
    "all": ("animals", "family", "people", "professions", "food", "body", "places", "things", "nature"),
}


def _adjs(cat: str, rows: str) -> None:
    """Rows "id | english | m f n pl acc_f gen_m | categories it combines with"."""
    for line in rows.strip().splitlines():
        id_, en, forms, applies = [p.strip() for p in line.split("|")]
        m, f, n, pl, acc_f, gen_m = forms.split()
        cats: tuple[str, ...] = ()
        for name in applies.split():
            cats += _GROUPS.get(name, (name,))
        _ENTRIES.append(Concept(id_, cat, "adj", {"base": en},
                                {"m": m, "f": f, "n": n, "pl": pl, "acc_f": acc_f, "gen_m": gen_m},
                                tuple(dict.fromkeys(cats))))


# Russian adjective forms: nominative m, f, n, plural; accusative f; genitive m (= accusative of
# an animate masculine noun). Accusative of inanimate m = nominative m; of n = nominative n.
_adjs("colours", """
red | red | красный красная красное красные красную красного | animals things flower
blue | blue | синий синяя синее синие синюю синего | animals things flower
green | green | зелёный зелёная зелёное зелёные зелёную зелёного | animals things food
yellow | yellow | жёлтый жёлтая жёлтое жёлтые жёлтую жёлтого | animals things food flower
black | black | чёрный чёрная чёрное чёрные чёрную чёрного | animals things
white | white | белый белая белое белые белую белого | animals things flower
gray | gray | серый серая серое серые серую серого | animals things
brown | brown | коричневый коричневая коричневое коричневые коричневую коричневого | animals things
orange | orange | оранжевый оранжевая оранжевое оранжевые оранжевую оранжевого | animals things
pink | pink | розовый розовая розовое розовые розовую розового | animals things flower
purple | purple | фиолетовый фиолетовая фиолетовое фиолетовые фиолетовую фиолетового | things flower
light_blue | light blue | голубой голубая голубое голубые голубую голубого | things flower
""")
_adjs("adjectives", """
big | big | большой большая большое большие большую большого | animate things places body nature
small | small | маленький маленькая маленькое маленькие маленькую маленького | animate things places body nature
old | old | старый старая старое старые старую старого | animate things places
young | young | молодой молодая молодое молодые молодую молодого | animate
new | new | новый новая новое новые новую нового | things places
good | good | хороший хорошая хорошее хорошие хорошую хорошего | animate things places food
bad | bad | плохой плохая плохое плохие плохую плохого | animate things places food
beautiful | beautiful | красивый красивая красивое красивые красивую красивого | animate things places nature
happy | happy | счастливый счастливая счастливое счастливые счастливую счастливого | animate
sad | sad | грустный грустная грустное грустные грустную грустного | animate
fast | fast | быстрый быстрая быстрое быстрые быструю быстрого | animate
slow | slow | медленный медленная медленное медленные медленную медленного | animate
hot | hot | горячий горячая горячее горячие горячую горячего | food
cold | cold | холодный холодная холодное холодные холодную холодного | food places
warm | warm | тёплый тёплая тёплое тёплые тёплую тёплого | food places
long | long | длинный длинная длинное длинные длинную длинного | things body
short | short | короткий короткая короткое короткие короткую короткого | things body
strong | strong | сильный сильная сильное сильные сильную сильного | animate
weak | weak | слабый слабая слабое слабые слабую слабого | animate
clever | clever | умный умная умное умные умную умного | animate
kind | kind | добрый добрая доброе добрые добрую доброго | human
quiet | quiet | тихий тихая тихое тихие тихую тихого | animate places
clean | clean | чистый чистая чистое чистые чистую чистого | things places body
dirty | dirty | грязный грязная грязное грязные грязную грязного | animals things places body
tired | tired | усталый усталая усталое усталые усталую усталого | animate
hungry | hungry | голодный голодная голодное голодные голодную голодного | animate
funny | funny | смешной смешная смешное смешные смешную смешного | animate
heavy | heavy | тяжёлый тяжёлая тяжёлое тяжёлые тяжёлую тяжёлого | things
expensive | expensive | дорогой дорогая дорогое дорогие дорогую дорогого | things food
cheap | cheap | дешёвый дешёвая дешёвое дешёвые дешёвую дешёвого | things food
""")

# verbs: English base, 3sg, past | Russian infinitive, 1sg, 3sg, 3pl, past m, past f, past pl
# | subjects: "animate" (animals too) or "human"; "live" only appears with a place
_VERBS = """
sleep | sleep sleeps slept | спать сплю спит спят спал спала спали | animate
eat | eat eats ate | есть ем ест едят ел ела ели | animate
drink | drink drinks drank | пить пью пьёт пьют пил пила пили | animate
run | run runs ran | бегать бегаю бегает бегают бегал бегала бегали | animate
walk | walk walks walked | гулять гуляю гуляет гуляют гулял гуляла гуляли | animate
swim | swim swims swam | плавать плаваю плавает плавают плавал плавала плавали | animate
jump | jump jumps jumped | прыгать прыгаю прыгает прыгают прыгал прыгала прыгали | animate
fly | fly flies flew | летать летаю летает летают летал летала летали | human
sit | sit sits sat | сидеть сижу сидит сидят сидел сидела сидели | animate
stand | stand stands stood | стоять стою стоит стоят стоял стояла стояли | animate
play | play plays played | играть играю играет играют играл играла играли | animate
read | read reads read | читать читаю читает читают читал читала читали | human
write | write writes wrote | писать пишу пишет пишут писал писала писали | human
sing | sing sings sang | петь пою поёт поют пел пела пели | human
dance | dance dances danced | танцевать танцую танцует танцуют танцевал танцевала танцевали | human
work | work works worked | работать работаю работает работают работал работала работали | human
think | think thinks thought | думать думаю думает думают думал думала думали | human
speak | speak speaks spoke | говорить говорю говорит говорят говорил говорила говорили | human
listen | listen listens listened | слушать слушаю слушает слушают слушал слушала слушали | human
laugh | laugh laughs laughed | смеяться смеюсь смеётся смеются смеялся смеялась смеялись | human
cry | cry cries cried | плакать плачу плачет плачут плакал плакала плакали | human
cook_verb | cook cooks cooked | готовить готовлю готовит готовят готовил готовила готовили | human
draw | draw draws drew | рисовать рисую рисует рисуют рисовал рисовала рисовали | human
wait | wait waits waited | ждать жду ждёт ждут ждал ждала ждали | animate
rest | rest rests rested | отдыхать отдыхаю отдыхает отдыхают отдыхал отдыхала отдыхали | animate
study | study studies studied | учиться учусь учится учатся учился училась учились | human
smile | smile smiles smiled | улыбаться улыбаюсь улыбается улыбаются улыбался улыбалась улыбались | human
live | live lives lived | жить живу живёт живут жил жила жили | animate
travel | travel travels traveled | путешествовать путешествую путешествует путешествуют путешествовал путешествовала путешествовали | human
shout | shout shouts shouted | кричать кричу кричит кричат кричал кричала кричали | human
"""
NEEDS_PLACE = frozenset({"live"})
for _line in _VERBS.strip().splitlines():
    _id, _en, _ru, _subj = [x.strip() for x in _line.split("|")]
    _b, _s3, _past = _en.split()
    _inf, _1sg, _3sg, _3pl, _pm, _pf, _ppl = _ru.split()
    _ENTRIES.append(Concept(_id, "verbs", "verb", {"base": _b, "3sg": _s3, "past": _past},
                            {"inf": _inf, "1sg": _1sg, "3sg": _3sg, "3pl": _3pl, "past_m": _pm,
                             "past_f": _pf, "past_pl": _ppl}, _GROUPS[_subj]))

# numerals: English | Russian form with a m, f, n noun | case of the counted noun
# (1: nominative singular; 2-4: genitive singular; 5 and up: genitive plural)
_NUMBERS = """
one | one | один одна одно | nom
two | two | два две два | gen
three | three | три три три | gen
four | four | четыре четыре четыре | gen
five | five | пять пять пять | gen_pl
six | six | шесть шесть шесть | gen_pl
seven | seven | семь семь семь | gen_pl
eight | eight | восемь восемь восемь | gen_pl
nine | nine | девять девять девять | gen_pl
ten | ten | десять десять десять | gen_pl
eleven | eleven | одиннадцать одиннадцать одиннадцать | gen_pl
twelve | twelve | двенадцать двенадцать двенадцать | gen_pl
twenty | twenty | двадцать двадцать двадцать | gen_pl
hundred | one hundred | сто сто сто | gen_pl
"""
for _line in _NUMBERS.strip().splitlines():
    _id, _en, _ru, _case = [x.strip() for x in _line.split("|")]
    _m, _f, _n = _ru.split()
    _ENTRIES.append(Concept(_id, "numbers", "num", {"base": _en}, {"m": _m, "f": _f, "n": _n, "governs": _case}))

LEXICON: dict[str, Concept] = {c.id: c for c in _ENTRIES}
assert len(LEXICON) == len(_ENTRIES), "duplicate concept id"
del _ENTRIES

_POSSESSIVE = {"m": "мой", "f": "моя", "n": "моё"}


def word_line(c: Concept) -> tuple[str, str]:
    """The word-translation line's two sides ("cat", "кошка"; verbs as "to sleep", "спать")."""
    return ("to " + c.en_lemma if c.pos == "verb" else c.en_lemma), c.ru_lemma


# ----------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Pair:
    """One parallel sentence pair with its labels."""

    en: str  # English sentence
    ru: str  # Russian sentence
    concepts: tuple[str, ...]  # ids of the lexicon concepts it mentions (slot fillers only)
    template: str  # name of the template that made it


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _np_en(n: Concept, adj: Concept | None = None) -> str:
    """English indefinite noun phrase: "a cat", "an old cat", "bread", "cold milk", "the sun"."""
    words = (adj.en["base"] + " " if adj else "") + n.en["sg"]
    det = n.en["det"]
    if det in ("a", "an"):
        det = _a(words)
    return f"{det} {words}".strip()


def _adj_nom(a: Concept, n: Concept) -> str:
    return a.ru[n.ru["gender"]]


def _adj_acc(a: Concept, n: Concept) -> str:
    g = n.ru["gender"]
    if g == "f":
        return a.ru["acc_f"]
    if g == "m" and n.category in ANIMATE:
        return a.ru["gen_m"]
    return a.ru[g]


def _past(v: Concept, n: Concept) -> str:
    return v.ru["past_" + n.ru["gender"]]


class _Pools:
    """Concept pools for the templates, without the excluded (held-out) concepts."""

    def __init__(self, exclude: frozenset[str]) -> None:
        ok = [c for c in LEXICON.values() if c.id not in exclude]
        self.nouns = [c for c in ok if c.pos == "noun" and c.category != "time"]
        self.subjects = [c for c in self.nouns if c.category in ANIMATE]
        self.humans = [c for c in self.nouns if c.category in HUMAN]
        self.countable = [c for c in self.nouns if c.countable]
        self.have = [c for c in self.countable if c.category in ("animals", "family", "people", "things", "food", "body")]
        self.there = [c for c in self.countable if c.category in ("animals", "people", "professions", "things", "food", "nature")]
        self.places = [c for c in self.nouns if c.category == "places"]
        self.food = [c for c in self.nouns if c.category == "food" and c.id not in DRINKS]
        self.drinks = [c for c in self.nouns if c.id in DRINKS]
        self.days = [c for c in ok if c.id in DAYS]
        self.periods = [c for c in ok if c.category == "time" and c.id not in DAYS]
        self.when = [c for c in ok if c.category == "time"]
        self.adjs = [c for c in ok if c.pos == "adj"]
        self.verbs = [c for c in ok if c.pos == "verb"]
        self.bare_verbs = [v for v in self.verbs if v.id not in NEEDS_PLACE]
        self.nums = [c for c in ok if c.pos == "num"]
        self.eat = LEXICON["eat"] if "eat" not in exclude else None
        self.drink = LEXICON["drink"] if "drink" not in exclude else None
        # (adjective, noun) combinations allowed by `applies`; mass nouns only with food adjectives
        self.adj_noun = [(a, n) for a in self.adjs for n in self.nouns
                         if (n.category in a.applies or n.id in a.applies) and (n.en["det"] != "" or n.category == "food")]
        self.adj_noun_indef = [(a, n) for a, n in self.adj_noun if n.en["det"] != "the"]  # "a red cat", "cold milk"
        self.adj_noun_pl = [(a, n) for a, n in self.adj_noun if n.countable]
        # (subject, verb) combinations allowed by the verb's subject categories
        self.subj_verb = [(s, v) for v in self.verbs for s in self.subjects if s.category in v.applies]
        self.subj_bare_verb = [(s, v) for s, v in self.subj_verb if v.id not in NEEDS_PLACE]
        self.kin_verb = [(s, v) for s, v in self.subj_bare_verb if s.category in ("family", "people")]


def _choice(rng: random.Random, items: list):
    return rng.choice(items) if items else None


def _t_this_is(rng, P):
    n = _choice(rng, P.nouns)
    if n is None:
        return None
    return Pair(f"This is {_np_en(n)}.", f"Это {n.ru['nom']}.", (n.id,), "this_is")


def _t_this_is_adj(rng, P):
    an = _choice(rng, P.adj_noun_indef)
    if an is None:
        return None
    a, n = an
    return Pair(f"This is {_np_en(n, a)}.", f"Это {_adj_nom(a, n)} {n.ru['nom']}.", (a.id, n.id), "this_is_adj")


def _t_is_adj(rng, P):
    an = _choice(rng, P.adj_noun)
    if an is None:
        return None
    a, n = an
    return Pair(f"The {n.en['sg']} is {a.en['base']}.", f"{_cap(n.ru['nom'])} {_adj_nom(a, n)}.", (n.id, a.id), "is_adj")


def _t_are_adj(rng, P):
    an = _choice(rng, P.adj_noun_pl)
    if an is None:
        return None
    a, n = an
    return Pair(f"The {n.en['pl']} are {a.en['base']}.", f"{_cap(n.ru['nom_pl'])} {a.ru['pl']}.", (n.id, a.id), "are_adj")


def _t_see(rng, P):
    n = _choice(rng, P.nouns)
    if n is None:
        return None
    return Pair(f"I see {_np_en(n)}.", f"Я вижу {n.ru['acc']}.", (n.id,), "see")


def _t_see_adj(rng, P):
    an = _choice(rng, P.adj_noun_indef)
    if an is None:
        return None
    a, n = an
    return Pair(f"I see {_np_en(n, a)}.", f"Я вижу {_adj_acc(a, n)} {n.ru['acc']}.", (a.id, n.id), "see_adj")


def _t_subj_verb(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"The {s.en['sg']} {v.en['3sg']}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']}.", (s.id, v.id), "subj_verb")


def _t_subj_verb_pl(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"The {s.en['pl']} {v.en['base']}.", f"{_cap(s.ru['nom_pl'])} {v.ru['3pl']}.", (s.id, v.id), "subj_verb_pl")


def _t_subj_verb_past(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"The {s.en['sg']} {v.en['past']}.", f"{_cap(s.ru['nom'])} {_past(v, s)}.", (s.id, v.id), "subj_verb_past")


def _t_i_verb(rng, P):
    if not P.bare_verbs:
        return None
    v = rng.choice(P.bare_verbs)
    return Pair(f"I {v.en['base']}.", f"Я {v.ru['1sg']}.", (v.id,), "i_verb")


def _t_want(rng, P):
    if not P.bare_verbs:
        return None
    v = rng.choice(P.bare_verbs)
    return Pair(f"I want to {v.en['base']}.", f"Я хочу {v.ru['inf']}.", (v.id,), "want")


def _t_verb_when(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None or not P.when:
        return None
    s, v = sv
    t = rng.choice(P.when)
    return Pair(f"The {s.en['sg']} {v.en['3sg']} {t.en['when']}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']} {t.ru['when']}.",
                (s.id, v.id, t.id), "verb_when")


def _t_past_when(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None or not P.when:
        return None
    s, v = sv
    t = rng.choice(P.when)
    return Pair(f"The {s.en['sg']} {v.en['past']} {t.en['when']}.", f"{_cap(s.ru['nom'])} {_past(v, s)} {t.ru['when']}.",
                (s.id, v.id, t.id), "past_when")


def _t_is_at(rng, P):
    if not P.subjects or not P.places:
        return None
    s, p = rng.choice(P.subjects), rng.choice(P.places)
    return Pair(f"The {s.en['sg']} is {p.en['loc']}.", f"{_cap(s.ru['nom'])} {p.ru['loc']}.", (s.id, p.id), "is_at")


def _t_verb_at(rng, P):
    sv = _choice(rng, P.subj_verb)
    if sv is None or not P.places:
        return None
    s, v = sv
    p = rng.choice(P.places)
    return Pair(f"The {s.en['sg']} {v.en['3sg']} {p.en['loc']}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']} {p.ru['loc']}.",
                (s.id, v.id, p.id), "verb_at")


def _t_eats(rng, P):
    options = [(P.eat, P.food), (P.drink, P.drinks)]
    options = [(v, objs) for v, objs in options if v is not None and objs]
    if not options or not P.subjects:
        return None
    v, objs = rng.choice(options)
    s, o = rng.choice(P.subjects), rng.choice(objs)
    return Pair(f"The {s.en['sg']} {v.en['3sg']} {_np_en(o)}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']} {o.ru['acc']}.",
                (s.id, v.id, o.id), "eats")


def _t_like(rng, P):
    foods = P.food + P.drinks
    if not foods:
        return None
    o = rng.choice(foods)
    if o.countable:  # "I like apples" / "Я люблю яблоки" (inanimate accusative plural = nominative plural)
        return Pair(f"I like {o.en['pl']}.", f"Я люблю {o.ru['nom_pl']}.", (o.id,), "like")
    return Pair(f"I like {o.en['sg']}.", f"Я люблю {o.ru['acc']}.", (o.id,), "like")


def _count_phrase(num: Concept, n: Concept) -> tuple[str, str]:
    en = f"{num.en['base']} {n.en['sg'] if num.id == 'one' else n.en['pl']}"
    case = num.ru["governs"]
    noun = n.ru["nom"] if case == "nom" else n.ru["gen"] if case == "gen" else n.ru["gen_pl"]
    return en, f"{num.ru[n.ru['gender']]} {noun}"


def _t_have(rng, P):
    if not P.nums or not P.have:
        return None
    num, n = rng.choice(P.nums), rng.choice(P.have)
    en, ru = _count_phrase(num, n)
    return Pair(f"I have {en}.", f"У меня есть {ru}.", (num.id, n.id), "have")


def _t_there(rng, P):
    if not P.nums or not P.there:
        return None
    num, n = rng.choice(P.nums), rng.choice(P.there)
    en, ru = _count_phrase(num, n)
    verb = "is" if num.id == "one" else "are"
    return Pair(f"There {verb} {en} here.", f"Здесь {ru}.", (num.id, n.id), "there")


def _t_today(rng, P):
    if not P.days:
        return None
    d = rng.choice(P.days)
    return Pair(f"Today is {d.en['sg']}.", f"Сегодня {d.ru['nom']}.", (d.id,), "today")


def _t_now(rng, P):
    if not P.periods:
        return None
    t = rng.choice(P.periods)
    return Pair(f"It is {t.en['sg']} now.", f"Сейчас {t.ru['nom']}.", (t.id,), "now")


def _t_my(rng, P):
    sv = _choice(rng, P.kin_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"My {s.en['sg']} {v.en['3sg']}.", f"{_cap(_POSSESSIVE[s.ru['gender']])} {s.ru['nom']} {v.ru['3sg']}.",
                (s.id, v.id), "my")


TEMPLATES: dict[str, Callable[[random.Random, _Pools], Pair | None]] = {
    f.__name__[3:]: f for f in (
        _t_this_is, _t_this_is_adj, _t_is_adj, _t_are_adj, _t_see, _t_see_adj, _t_subj_verb, _t_subj_verb_pl,
        _t_subj_verb_past, _t_i_verb, _t_want, _t_verb_when, _t_past_when, _t_is_at, _t_verb_at, _t_eats,
        _t_like, _t_have, _t_there, _t_today, _t_now, _t_my)
}


def sample_pair(rng: random.Random, pools: _Pools) -> Pair:
    """One sentence pair from a uniformly chosen template (templates without fillers are skipped)."""
    names = list(TEMPLATES)
    while True:
        pair = TEMPLATES[rng.choice(names)](rng, pools)
        if pair is not None:
            return pair


# ----------------------------------------------------------------------------- held-out rule

HOLDOUT_PERCENT = 4  # buckets 0..3 of 100 are held out: 0-1 "test", 2-3 "validation" (by the English text)
EVAL_SIZES = {"validation": 500, "test": 1000}  # fixed eval set sizes (sentence pairs)
HOLDOUT_SEED = 20261128  # fixed: the eval sets never depend on a user's seed
HOLDOUT_CONCEPT_SENTENCES = 20  # extra "test" pairs per held-out concept


def bucket(text: str) -> int:
    """Stable hash bucket 0..99 of a sentence (BLAKE2b; independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") % 100


def heldout_split(pair: Pair) -> str | None:
    """"test"/"validation" for a held-out pair, "excluded" if only its Russian side is held out, else None."""
    b = bucket(pair.en)
    if b < 2:
        return "test"
    if b < HOLDOUT_PERCENT:
        return "validation"
    return "excluded" if bucket(pair.ru) < HOLDOUT_PERCENT else None


SUITE_HOLDOUT_PERCENT = 10  # concepts whose id hashes into bucket < 10 (about 10%): the "suite" holdout
_NOT_FORMS = ("gender", "det", "governs")  # lexicon keys that hold no word of the concept
_FUNCTION_WORDS = frozenset("a an the to in on at of for в во на у к с о об по за".split())


def word_forms(c: Concept) -> frozenset[str]:
    """Every lower-case English and Russian word the lexicon spells `c` with (the words of its
    "in the kitchen" / "на кухне" phrases, less the prepositions and articles)."""
    out: set[str] = set()
    for key, v in list(c.en.items()) + list(c.ru.items()):
        if key not in _NOT_FORMS and v != "-":
            out |= {w for w in v.lower().split() if w not in _FUNCTION_WORDS}
    return frozenset(out)


def holdout_closure(ids) -> tuple[str, ...]:
    """`ids` and every concept spelt with one of their words: holding out the colour "orange"
    must also hold out the fruit "orange", or training would print the held-out word."""
    ids = set(ids)
    words = set().union(*(word_forms(LEXICON[c]) for c in ids)) if ids else set()
    return tuple(sorted(ids | {c.id for c in LEXICON.values() if word_forms(c) & words}))


def suite_holdout() -> list[str]:
    """The concepts the offline evaluation suites and the probes call held out (about 10%, by a
    hash of the id, closed over shared spellings): train with `concepts?holdout=suite` and the
    generated text never mentions them."""
    return list(holdout_closure(c for c in LEXICON if bucket(c) < SUITE_HOLDOUT_PERCENT))


class Mentions:
    """Does a text spell one of `words`? Whole words, case-insensitive: the text's maximal runs of
    word characters, lower-cased, against the set (what a `(?<!\\w)(?:w1|w2|...)(?!\\w)` regex
    would find, without its alternation's cost: 7x faster over the LibreOffice pairs)."""

    _WORD = re.compile(r"\w+")

    def __init__(self, words) -> None:
        self.words = frozenset(w.lower() for w in words)

    def search(self, text: str) -> str | None:
        """The first held-out word (alphabetically) that `text` spells, or None."""
        hit = self.words.intersection(self._WORD.findall(text.lower()))
        return min(hit) if hit else None


def mention_pattern(ids) -> Mentions | None:
    """A whole-word, case-insensitive test (`.search(text)`) for every word form of the concepts
    `ids` (None for none): what a filter of free text (the LibreOffice pairs) drops."""
    words = set().union(*(word_forms(LEXICON[c]) for c in ids)) if ids else set()
    return Mentions(words) if words else None


def parse_holdout(value: "str | list[str] | tuple[str, ...]") -> tuple[str, ...]:
    """`"suite"`, `"cat dog"` / `"cat;dog"` (a corpus spec's `holdout=` value) or a list of ids ->
    sorted concept ids, each checked against `LEXICON`."""
    if isinstance(value, str):
        parts = [p for p in value.replace(";", " ").replace("+", " ").split() if p]
    else:
        parts = [str(p) for p in value]
    ids: set[str] = set()
    for part in parts:
        ids |= set(suite_holdout()) if part == "suite" else {part}
    unknown = sorted(ids - set(LEXICON))
    if unknown:
        raise ValueError(f"unknown concept id(s) {unknown[:5]} in holdout: use 'suite' or ids from "
                         "bvvlab.corpus.concepts.LEXICON, e.g. concepts?holdout=cat+dog")
    return holdout_closure(ids)


@functools.lru_cache(maxsize=None)
def _pools(exclude: frozenset[str]) -> _Pools:
    return _Pools(exclude)


def pools_without(exclude: frozenset[str]) -> _Pools:
    """The templates' concept pools less `exclude` (for `sample_pair`; cached): the probes force a
    concept into the templates by leaving out the others of its kind."""
    return _pools(frozenset(exclude))


FUNCTION_WORDS = _FUNCTION_WORDS  # the words of a phrase form that are not the concept's own


@functools.lru_cache(maxsize=4)
def eval_pairs(split: str) -> tuple[Pair, ...]:
    """The fixed held-out sentence pairs of "validation" or "test" (deterministic, seed-free)."""
    if split not in EVAL_SIZES:
        raise ValueError(f"unknown concept eval split {split!r}: use 'validation' or 'test'")
    rng, pools = random.Random(f"{HOLDOUT_SEED}:{split}"), _pools(frozenset())
    out: dict[str, Pair] = {}
    while len(out) < EVAL_SIZES[split]:
        p = sample_pair(rng, pools)
        if heldout_split(p) == split:
            out.setdefault(p.en, p)
    return tuple(out.values())


# ----------------------------------------------------------------------------- documents


@dataclass
class ConceptConfig:
    """How the concept corpus is generated (saved with any run that uses it)."""

    seed: int = 0  # generator seed: same seed, same documents
    parallel_ratio: float = 0.5  # share of documents that are parallel (pairs or word lines); the rest monolingual
    word_share: float = 0.2  # of the parallel documents, the share that are word-translation lists
    holdout_concepts: tuple[str, ...] = ()  # concept ids never shown in training (added to "test")
    max_sentences: int = 4  # sentences (or lines) per document: 1..max_sentences
    monolingual_langs: tuple[str, ...] = ("en", "ru")  # languages of the monolingual documents


class ConceptCorpus:
    """Deterministic, unbounded documents over `LEXICON`; see the module docstring.

    `documents("train")` never ends; "validation" and "test" are the fixed held-out sets
    (`eval_pairs`), as parallel documents, plus (test only) pairs with `holdout_concepts`.
    Every document has `meta = {"kind", "concepts", "sentences": [{"text", "lang", "concepts",
    "template"}]}`; parallel text is rendered one sentence per line, English line first.
    """

    def __init__(self, seed: int = 0, parallel_ratio: float = 0.5, holdout_concepts: tuple[str, ...] | list[str] = (),
                 **kw) -> None:
        self.config = ConceptConfig(seed=seed, parallel_ratio=parallel_ratio,
                                    holdout_concepts=tuple(holdout_concepts), **kw)
        unknown = [c for c in self.config.holdout_concepts if c not in LEXICON]
        if unknown:
            raise ValueError(f"unknown concept id(s) {unknown}: use ids from bvvlab.corpus.concepts.LEXICON")
        if not 0.0 <= parallel_ratio <= 1.0:
            raise ValueError(f"parallel_ratio must be in [0, 1], got {parallel_ratio}")
        self.holdout = frozenset(holdout_closure(self.config.holdout_concepts))  # shared spellings too
        self.pools = _pools(self.holdout)
        self.mentions = mention_pattern(self.holdout)  # any word form of a held-out concept

    # -- training stream
    def train_pairs(self, rng: random.Random) -> Iterator[Pair]:
        """Training sentence pairs: never held out, never with a held-out concept."""
        while True:
            p = sample_pair(rng, self.pools)
            if heldout_split(p) is None and not (self.mentions and (self.mentions.search(p.en)
                                                                   or self.mentions.search(p.ru))):
                yield p

    def documents(self, split: str = "train") -> Iterator[Document]:
        if split != "train":
            yield from (self._parallel_doc([p], "heldout") for p in self.eval_split(split))
            return
        # the guarantee: no training document spells a word form of a held-out concept (a
        # template's own words included)
        yield from (d for d in self._train_documents() if not (self.mentions and self.mentions.search(d.text)))

    def _train_documents(self) -> Iterator[Document]:
        cfg = self.config
        rng = random.Random(f"concepts:{cfg.seed}")
        pairs = self.train_pairs(rng)
        words = [c for c in LEXICON.values() if c.id not in self.holdout]
        while True:
            k = rng.randint(1, cfg.max_sentences)
            if rng.random() < cfg.parallel_ratio:
                if rng.random() < cfg.word_share:
                    chosen = rng.sample(words, k)
                    lines = [word_line(c) for c in chosen]
                    yield Document("\n".join(f"{e} — {r}" for e, r in lines), "en-ru", "concepts",
                                   {"kind": "words", "concepts": sorted({c.id for c in chosen}),
                                    "en": "\n".join(e for e, _ in lines), "ru": "\n".join(r for _, r in lines),
                                    "sentences": [{"text": f"{e} — {r}", "lang": "en-ru", "concepts": [c.id],
                                                   "template": "word"} for (e, r), c in zip(lines, chosen)]})
                else:
                    yield self._parallel_doc([next(pairs) for _ in range(k)], "parallel")
            else:
                lang = rng.choice(cfg.monolingual_langs)
                sents = [next(pairs) for _ in range(k)]
                texts = [getattr(p, lang) for p in sents]
                yield Document(" ".join(texts), lang, "concepts",
                               {"kind": "monolingual", "concepts": sorted({c for p in sents for c in p.concepts}),
                                "sentences": [{"text": t, "lang": lang, "concepts": list(p.concepts),
                                               "template": p.template} for t, p in zip(texts, sents)]})

    @staticmethod
    def _parallel_doc(pairs: list[Pair], kind: str) -> "Document":
        sentences = []
        for p in pairs:
            sentences += [{"text": p.en, "lang": "en", "concepts": list(p.concepts), "template": p.template},
                          {"text": p.ru, "lang": "ru", "concepts": list(p.concepts), "template": p.template}]
        # meta "en"/"ru": each side alone (as the LibreOffice documents carry them)
        return Document("\n".join(s["text"] for s in sentences), "en-ru", "concepts",
                        {"kind": kind, "concepts": sorted({c for p in pairs for c in p.concepts}), "sentences": sentences,
                         "en": "\n".join(p.en for p in pairs), "ru": "\n".join(p.ru for p in pairs)})

    # -- evaluation
    def eval_split(self, split: str) -> list[Pair]:
        """Fixed held-out pairs; "test" also gets up to HOLDOUT_CONCEPT_SENTENCES pairs per held-out concept."""
        if split not in EVAL_SIZES:
            raise ValueError(f"unknown split {split!r} for concepts: use 'train', 'validation' or 'test'")
        out = list(eval_pairs(split))
        if split == "test" and self.holdout:
            out += self._holdout_concept_pairs()
        return out

    def _holdout_concept_pairs(self) -> list[Pair]:
        rng, pools = random.Random(f"{HOLDOUT_SEED}:concepts"), _pools(frozenset())
        need = {c: HOLDOUT_CONCEPT_SENTENCES for c in sorted(self.holdout)}
        seen = {p.en for p in eval_pairs("test")}
        out: list[Pair] = []
        for _ in range(400_000):
            if not any(need.values()):
                break
            p = sample_pair(rng, pools)
            hit = [c for c in p.concepts if need.get(c)]
            if hit and p.en not in seen and heldout_split(p) != "validation":  # keep test and validation disjoint
                seen.add(p.en)
                out.append(p)
                for c in hit:
                    need[c] -= 1
        return out

    def eval_texts(self) -> frozenset[str]:
        """Every English and Russian sentence of the validation and test sets (leak checks)."""
        return frozenset(t for s in EVAL_SIZES for p in self.eval_split(s) for t in (p.en, p.ru))


__all__ = ["CATEGORIES", "LEXICON", "Concept", "ConceptConfig", "ConceptCorpus", "Pair", "TEMPLATES", "eval_pairs",
           "Mentions", "heldout_split", "holdout_closure", "mention_pattern", "parse_holdout", "sample_pair", "suite_holdout",
           "word_forms", "word_line"]
